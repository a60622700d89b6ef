import type { KafkaSink, KafkaSinkOptions } from './event-sink.js';
import { KafkaSender } from './kafka-sender.js';
import { chunksOf, RecordEncoder } from './outgoing-records.js';
import { SendProgress } from './send-progress.js';

/**
 * Publishes to `outbox.event.<aggregate_type>` with an idempotent producer (`acks: -1`, one
 * request in flight, so per-partition order holds). Creates missing topics with unlimited
 * retention. A failed send is retried with a fresh producer (idempotence does not survive an
 * ambiguous failure) until it succeeds, the sink is closed or the publish is aborted: quickly
 * while the failure may pass by itself, slowly while it cannot (see {@link classifySendError}),
 * never skipping an event. {@link KafkaSink.blocked} says when sends are not getting through.
 */
export function createKafkaSink(options: KafkaSinkOptions): KafkaSink {
  const maxBatchBytes = options.maxBatchBytes ?? 900 * 1024;
  const encoder = new RecordEncoder(options);
  const progress = new SendProgress(options);
  const sender = new KafkaSender(options, encoder, progress);
  return {
    async publish(events, signal) {
      if (events.length === 0) return;
      const signals = sender.signalsWith(signal);
      const outgoing = encoder.encode(events);
      for (const item of outgoing) {
        if (item.oversized) await sender.retrying(item, signals, () => encoder.claimCheck(item));
      }
      for (const chunk of chunksOf(outgoing, maxBatchBytes)) await sender.send(chunk, signals);
    },

    blocked: () => progress.blocked(),

    close: () => sender.close(),
  };
}
