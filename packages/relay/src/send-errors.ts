import { errorMessage, isSluiceError } from '@sluice/errors';
import type { SendFailureReason } from './event-sink.js';

const PROGRAMMING_ERRORS = new Set(['TypeError', 'ReferenceError', 'RangeError', 'SyntaxError']);
/** Refusals of the producer's state, which a fresh producer (new id, new sequences) clears. */
const PRODUCER_STATE_ERRORS = new Set([
  'OUT_OF_ORDER_SEQUENCE_NUMBER',
  'DUPLICATE_SEQUENCE_NUMBER',
  'INVALID_PRODUCER_EPOCH',
  'UNKNOWN_PRODUCER_ID',
  'INVALID_PRODUCER_ID_MAPPING',
  'PRODUCER_FENCED',
]);

/** The error and its causes, outermost first: kafkajs wraps what its retrier gives up on. */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let current = error; current != null && chain.length < 8;) {
    chain.push(current);
    current = (current as { cause?: unknown }).cause;
  }
  return chain;
}

/** Whether retrying a failed send may help; see {@link SendFailureReason}. */
export function classifySendError(error: unknown): SendFailureReason {
  const chain = causes(error);
  if (chain.some((cause) => cause instanceof Error && PROGRAMMING_ERRORS.has(cause.name))) {
    return 'programming_error';
  }
  for (const cause of chain) {
    const { type, retriable } = cause as { type?: unknown; retriable?: unknown };
    // kafkajs calls CORRUPT_MESSAGE retriable; sent again, the same bytes fail the same check.
    if (type === 'CORRUPT_MESSAGE') return 'rejected';
    if (typeof type === 'string' && retriable === false && !PRODUCER_STATE_ERRORS.has(type)) {
      return 'rejected';
    }
    if (isSluiceError(cause, 'record_too_large')) return 'rejected';
  }
  return 'transient';
}

/**
 * Whether Kafka refused a send because too few replicas are in sync (`min.insync.replicas`):
 * a broker of the partition is down or behind, and the send waits for it.
 */
export function isUnderReplicated(error: unknown): boolean {
  return causes(error).some((cause) => {
    const type = (cause as { type?: unknown }).type;
    return type === 'NOT_ENOUGH_REPLICAS' || type === 'NOT_ENOUGH_REPLICAS_AFTER_APPEND';
  });
}

/** The error's message, with the first Kafka error type found among its causes. */
export function describeError(error: unknown): string {
  const type = causes(error)
    .map((cause) => (cause as { type?: unknown }).type)
    .find((value): value is string => typeof value === 'string');
  const name = error instanceof Error ? error.name : 'Error';
  return `${name}${type === undefined ? '' : ` (${type})`}: ${errorMessage(error)}`;
}

/** The broker refuses the record, or the request, as too large. */
export function isTooLarge(error: unknown): boolean {
  const type = (error as { type?: string }).type;
  return type === 'MESSAGE_TOO_LARGE' || type === 'RECORD_LIST_TOO_LARGE';
}
