import { SluiceError } from '@sluice/errors';
import { assertPayload, type Catalog, type EventDefinitions, type EventOf } from './catalog.js';
import { fromKafkaRecord } from './cloud-events.js';
import type { ContractsErrorCode } from './errors.js';

/** A header value as Kafka clients give it: bytes or text, repeated, or null. */
export type HeaderValue = Buffer | string | readonly (Buffer | string | null)[] | null | undefined;

/** A Kafka message as kafkajs (and most clients) give it: bytes or text. */
export interface KafkaMessageLike {
  key: Buffer | string | null;
  value: Buffer | string | null;
  headers?: Readonly<Record<string, HeaderValue>> | undefined;
}

const text = (value: string | Buffer): string =>
  typeof value === 'string' ? value : value.toString('utf8');

/**
 * Sets a header on an object of headers as its own property, whatever its name: a plain
 * assignment of `__proto__` would set the object's prototype instead.
 */
export function setHeader<T>(headers: Record<string, T>, name: string, value: T): void {
  if (name === '__proto__')
    Object.defineProperty(headers, name, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  else headers[name] = value;
}

/** The text view of headers: null values left out, repeated ones joined with commas. */
export function headerText(
  headers: Readonly<Record<string, HeaderValue>> | undefined,
): Record<string, string | undefined> {
  const result: Record<string, string | undefined> = {};
  if (headers === undefined) return result;
  // A plain loop: this runs for every header of every record.
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || value === null) continue;
    if (!Array.isArray(value)) {
      setHeader(result, name, text(value as string | Buffer));
      continue;
    }
    const values = (value as readonly (Buffer | string | null)[])
      .filter((item): item is string | Buffer => item !== null)
      .map(text);
    if (values.length > 0) setHeader(result, name, values.join(','));
  }
  return result;
}

/**
 * Reads an event the relay published, as another team's consumer does with its own Kafka
 * client: decodes the CloudEvents record and checks its payload against `catalog`. Delivery is
 * at least once: keep the highest `aggregateVersion` handled per aggregate and skip the rest.
 *
 * @throws SluiceError `record_malformed` (a header or the key missing, a value that is not JSON, …),
 *   `record_claim_checked` (a payload too large for Kafka: no value, `ce_dataref` names where it
 *   is), `event_type_unknown`, `event_payload_invalid`
 * @example
 * await consumer.run({
 *   eachMessage: async ({ message }) => {
 *     const event = readEvent(billing, message);
 *     if (event.type === 'invoice.paid.v1') console.log(event.payload.amountCents);
 *   },
 * });
 */
export function readEvent<D extends EventDefinitions>(
  catalog: Catalog<D>,
  message: KafkaMessageLike,
): EventOf<Catalog<D>> {
  const headers = headerText(message.headers);
  if (message.value === null && headers.ce_dataref !== undefined) {
    throw new SluiceError<ContractsErrorCode>(
      'record_claim_checked',
      `The payload of event ${headers.ce_id ?? '(no ce_id)'} was too large for Kafka: ${headers.ce_dataref} names where it is`,
    );
  }
  const event = fromKafkaRecord({
    key: message.key === null ? null : text(message.key),
    value: message.value === null ? null : text(message.value),
    headers,
  });
  assertPayload(catalog, event.type, event.payload);
  return event as EventOf<Catalog<D>>;
}
