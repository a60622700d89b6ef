import type { KafkaSinkOptions, PublishBlock, SendFailure } from './event-sink.js';
import { identify, type OutgoingRecord } from './outgoing-records.js';
import { classifySendError, describeError } from './send-errors.js';

/** The send under way, from its first attempt until one succeeds. */
interface Underway {
  since: Date;
  item: OutgoingRecord;
  failure?: SendFailure;
  stallTimer: NodeJS.Timeout;
  stalled: boolean;
}

/**
 * Follows the send under way: its failures and their pauses, whether it stalled, and whether it
 * recovered; reports each through the sink's callbacks and says why sends are blocked.
 */
export class SendProgress {
  private readonly stalledAfterMs: number;
  private underway: Underway | undefined;

  constructor(private readonly options: KafkaSinkOptions) {
    this.stalledAfterMs = options.stalledAfterMs ?? 30_000;
  }

  /** Starts following a send, unless one (that this one is part of) is under way. */
  begin(item: OutgoingRecord): void {
    this.underway ??= {
      since: new Date(),
      item,
      stallTimer: setTimeout(() => this.stall(), this.stalledAfterMs),
      stalled: false,
    };
  }

  /** Ends the send under way; `through` when it succeeded. */
  settle(through: boolean): void {
    if (this.underway === undefined) return;
    clearTimeout(this.underway.stallTimer);
    const { since, failure, stalled: wasStalled } = this.underway;
    this.underway = undefined;
    if (through && (failure !== undefined || wasStalled)) {
      this.options.onRecovered?.(since, failure?.attempt ?? 0);
    }
  }

  /** Records a failed attempt and returns the pause before the next. */
  failed(item: OutgoingRecord, error: unknown, attempt: number): number {
    const reason = classifySendError(error);
    const ceilingMs =
      reason === 'transient'
        ? (this.options.retryMaxMs ?? 5000)
        : (this.options.blockedRetryMaxMs ?? 60_000);
    const retryInMs = Math.min(
      (this.options.retryInitialMs ?? 200) * 2 ** Math.min(attempt - 1, 20),
      ceilingMs,
    );
    const since = this.underway?.since ?? new Date();
    const failure = {
      reason,
      error,
      event: identify(item.event),
      topic: item.topic,
      attempt,
      since,
      retryInMs,
      ...(item.span === undefined ? {} : { span: item.span }),
    };
    if (this.underway !== undefined) this.underway.failure = failure;
    this.options.onSendFailed?.(failure, this.blocked());
    return retryInMs;
  }

  blocked(): PublishBlock | undefined {
    if (this.underway === undefined) return undefined;
    const { since, item, failure, stalled } = this.underway;
    const reason = failure?.reason ?? 'transient';
    // The stall timer settles it: timers and Date.now() round apart, and a timer may fire when
    // Date.now() has not quite moved `stalledAfterMs`.
    if (reason === 'transient' && !stalled && Date.now() - since.getTime() < this.stalledAfterMs) {
      return undefined;
    }
    return {
      reason: reason === 'transient' ? 'stalled' : reason,
      event: failure?.event ?? identify(item.event),
      topic: failure?.topic ?? item.topic,
      error: failure === undefined ? 'no answer from Kafka yet' : describeError(failure.error),
      since,
      attempts: failure?.attempt ?? 0,
    };
  }

  private stall(): void {
    if (this.underway === undefined) return;
    this.underway.stalled = true;
    const block = this.blocked();
    if (block?.reason === 'stalled') this.options.onStalled?.(block);
  }
}
