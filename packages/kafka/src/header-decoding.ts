import { createRequire } from 'node:module';

/** The header decoder of our kafkajs patch (`patches/kafkajs@2.2.4.patch`). */
interface PatchedHeaderDecoder {
  valuesAsStrings?: boolean;
}

/** kafkajs' header decoder: the patched one, or upstream's (where the switch does not exist). */
function headerDecoder(): PatchedHeaderDecoder | undefined {
  try {
    return createRequire(import.meta.url)(
      'kafkajs/src/protocol/recordBatch/header/v0/decoder',
    ) as PatchedHeaderDecoder;
  } catch {
    return undefined;
  }
}

/**
 * Process-wide: whether consumers receive record header values as strings (UTF-8) instead of
 * Buffers. A switch our kafkajs patch adds; for a process that turns every header value into a
 * string anyway, it saves a Buffer per header of every record. Off by default.
 *
 * Returns whether the switch exists: an installed kafkajs without the patch has none, and
 * consumers keep receiving Buffers (which Sluice's own consumers read as well).
 *
 * @example decodeHeaderValuesAsStrings(true); // before the first fetch
 */
export function decodeHeaderValuesAsStrings(on: boolean): boolean {
  const decoder = headerDecoder();
  if (decoder === undefined || !Object.hasOwn(decoder, 'valuesAsStrings')) return false;
  decoder.valuesAsStrings = on;
  return true;
}
