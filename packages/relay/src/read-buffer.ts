import type { SerializedEvent } from '@sluice/contracts';
import type { OutgoingEvent } from './event-sink.js';
import { Lsn } from './lsn.js';

/** A transaction read from the stream: its events are numbered up to `lastSeq`. */
interface Transaction {
  commitTime: Date;
  /** Set once its commit was read. */
  endLsn: Lsn | undefined;
  lastSeq: number;
}

/**
 * What one stream read that PostgreSQL was not yet told is durable: the events not yet
 * published, in order, and the transactions not yet acknowledged.
 */
export class ReadBuffer {
  /** Events read and not yet published, from `head` on; published ones are let go at once. */
  private pending: (OutgoingEvent | undefined)[] = [];
  private head = 0;
  /** Sequence numbers: events read, and events Kafka acknowledged, in this stream. */
  private received = 0;
  private published = 0;
  /** Characters of the payloads not yet published. */
  private bytes = 0;
  /** Transactions not yet acknowledged, oldest first; the last may still be open. */
  private transactions: Transaction[] = [];
  private open: Transaction | undefined;
  private openCommitLsn = Lsn.zero;

  /** A transaction was begun and its commit is not read yet. */
  isOpen(): boolean {
    return this.open !== undefined;
  }

  hasTransactions(): boolean {
    return this.transactions.length > 0;
  }

  unpublished(): number {
    return this.received - this.published;
  }

  /** About how many bytes the unpublished events' payloads hold: their JSON's length. */
  unpublishedBytes(): number {
    return this.bytes;
  }

  oldestCommitTime(): Date | undefined {
    return this.transactions[0]?.commitTime;
  }

  begin(commitLsn: Lsn, commitTime: Date): void {
    this.open = { commitTime, endLsn: undefined, lastSeq: this.received };
    this.openCommitLsn = commitLsn;
    this.transactions.push(this.open);
  }

  /** Adds an event of the open transaction. */
  add(event: SerializedEvent): void {
    if (this.open === undefined) return;
    this.pending.push({ event, commitLsn: this.openCommitLsn, commitTime: this.open.commitTime });
    this.received += 1;
    this.bytes += event.payloadJson.length;
    this.open.lastSeq = this.received;
  }

  /** Closes the open transaction at `endLsn`; false when none was open. */
  commit(endLsn: Lsn): boolean {
    if (this.open === undefined) return false;
    this.open.endLsn = endLsn;
    this.open = undefined;
    return true;
  }

  /** The next unpublished events, at most `max`. */
  nextBatch(max: number): OutgoingEvent[] {
    const batch: OutgoingEvent[] = [];
    const end = Math.min(this.pending.length, this.head + max);
    for (let i = this.head; i < end; i += 1) {
      const next = this.pending[i];
      if (next !== undefined) batch.push(next);
    }
    return batch;
  }

  /** Kafka acknowledged the next `count` events. */
  markPublished(count: number): void {
    if (count > this.unpublished())
      throw new RangeError(`${count} events published, ${this.unpublished()} were waiting`);
    for (let i = this.head; i < this.head + count; i += 1) {
      this.bytes -= this.pending[i]?.event.payloadJson.length ?? 0;
      this.pending[i] = undefined;
    }
    this.head += count;
    this.published += count;
    if (this.head >= 4096 && this.head * 2 >= this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * Drops the committed transactions all of whose events are published, oldest first, and
   * returns the end of the last one dropped.
   */
  settle(): Lsn | undefined {
    let done = 0;
    let end: Lsn | undefined;
    for (const transaction of this.transactions) {
      if (transaction.endLsn === undefined || transaction.lastSeq > this.published) break;
      end = transaction.endLsn;
      done += 1;
    }
    if (end !== undefined) this.transactions = this.transactions.slice(done);
    return end;
  }
}
