import { setHeader } from '@sluice/contracts';
import { ACKS_ALL, idempotentProducer } from '@sluice/kafka';
import type { IHeaders, Kafka, Message, Producer } from 'kafkajs';
import { rawOf, type DeadLetter, type DeadLetterSink } from './records.js';

/** Options for {@link createDeadLetterSink}. */
export interface DeadLetterSinkOptions {
  kafka: Kafka;
  /** The dead-letter topic of a projection, e.g. `sluice.dlq.cart_summary`. */
  topicOf(projection: string): string;
  /** Makes sure the topic exists before the first send. */
  ensureTopic(topic: string): Promise<void>;
  /** Bytes per send, under the broker's `message.max.bytes` (1 MiB by default). Default 900 KiB. */
  maxBatchBytes?: number;
}

/** The dead-letter record: the original key, value and headers plus `sluice_error_*` headers. */
export function deadLetterMessage(projection: string, letter: DeadLetter): Message {
  const { record } = letter;
  const raw = rawOf(record);
  const headers: IHeaders = {};
  // Kafka allows null header values, but kafkajs cannot write them: they are named instead.
  const nulls: string[] = [];
  for (const [name, value] of raw.headers) {
    if (value === null) {
      nulls.push(name);
      continue;
    }
    const existing = Object.hasOwn(headers, name) ? headers[name] : undefined;
    const merged =
      existing === undefined
        ? value
        : [...(Array.isArray(existing) ? existing : [existing]), value];
    setHeader(headers, name, merged);
  }
  if (nulls.length > 0) headers.sluice_error_null_headers = nulls.join(',');
  Object.assign(headers, {
    sluice_error_projection: projection,
    sluice_error_topic: record.topic,
    sluice_error_partition: String(record.partition),
    sluice_error_offset: record.offset.toString(),
    sluice_error_class: letter.errorClass,
    sluice_error_message: letter.message.slice(0, 2000),
    sluice_error_attempts: String(letter.attempts),
    sluice_error_first_failure: letter.firstFailure.toISOString(),
    sluice_error_last_failure: letter.lastFailure.toISOString(),
  });
  return { key: raw.key, value: raw.value, headers };
}

function sizeOf(message: Message): number {
  let bytes = 64 + (message.key?.length ?? 0) + (message.value?.length ?? 0);
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    for (const item of Array.isArray(value) ? value : [value])
      bytes += name.length + 8 + (item === undefined ? 0 : Buffer.byteLength(item));
  }
  return bytes;
}

/**
 * A dead letter too large for the broker, made smaller: first without its value, then without
 * the original headers too (both stay in the original topic and with the parked record).
 * Undefined when there is nothing left to leave out.
 */
function withoutBulk(message: Message): Message | undefined {
  const headers = message.headers ?? {};
  if (message.value !== null) {
    const bytes = String(Buffer.byteLength(message.value));
    return { ...message, value: null, headers: { ...headers, sluice_error_value_omitted: bytes } };
  }
  if (headers.sluice_error_headers_omitted !== undefined) return undefined;
  const kept = Object.fromEntries(
    Object.entries(headers).filter(
      ([name]) => name.startsWith('sluice_error_') || name === 'ce_id',
    ),
  );
  return { ...message, headers: { ...kept, sluice_error_headers_omitted: 'true' } };
}

const tooLarge = (error: unknown): boolean => {
  const type = (error as { type?: string }).type;
  return type === 'MESSAGE_TOO_LARGE' || type === 'RECORD_LIST_TOO_LARGE';
};

/**
 * Sends dead letters with an idempotent producer, in sends small enough for the broker. A letter
 * the broker refuses as too large goes without its value, marked `sluice_error_value_omitted`
 * (the value stays in the original topic and with the parked record).
 */
export function createDeadLetterSink(options: DeadLetterSinkOptions): DeadLetterSink & {
  close(): Promise<void>;
} {
  const maxBatchBytes = options.maxBatchBytes ?? 900 * 1024;
  let producer: Producer | undefined;

  async function connected(): Promise<Producer> {
    if (producer === undefined) {
      const fresh = idempotentProducer(options.kafka);
      await fresh.connect();
      producer = fresh;
    }
    return producer;
  }

  async function send(topic: string, messages: readonly Message[]): Promise<void> {
    try {
      await (await connected()).send({ topic, acks: ACKS_ALL, messages: [...messages] });
    } catch (error) {
      if (!tooLarge(error)) throw error;
      if (messages.length > 1) {
        const half = Math.ceil(messages.length / 2);
        await send(topic, messages.slice(0, half));
        await send(topic, messages.slice(half));
        return;
      }
      const smaller = messages[0] === undefined ? undefined : withoutBulk(messages[0]);
      if (smaller === undefined) throw error;
      await send(topic, [smaller]);
    }
  }

  return {
    async send(projection, letters) {
      const topic = options.topicOf(projection);
      await options.ensureTopic(topic);
      let chunk: Message[] = [];
      let size = 0;
      for (const letter of letters) {
        const message = deadLetterMessage(projection, letter);
        const bytes = sizeOf(message);
        if (chunk.length > 0 && size + bytes > maxBatchBytes) {
          await send(topic, chunk);
          chunk = [];
          size = 0;
        }
        chunk.push(message);
        size += bytes;
      }
      if (chunk.length > 0) await send(topic, chunk);
    },
    async close() {
      await producer?.disconnect().catch(() => undefined);
      producer = undefined;
    },
  };
}
