import type { ICustomPartitioner, Kafka, Message, RecordMetadata } from 'kafkajs';
import type { PublishedRecord } from './event-sink.js';
import type { OutgoingRecord } from './outgoing-records.js';

/**
 * Notes the partition kafkajs' own partitioner picks for each message: the acknowledgement
 * gives offsets per partition, not per message. Wraps `kafka` so that the producers it makes
 * keep their settings and partitioner, which then also writes its choice into `chosen`, and
 * its latest choice into `latest`.
 */
export function partitionNoting(
  kafka: Kafka,
  chosen: WeakMap<Message, number>,
  latest?: WeakMap<Message, number>,
): Kafka {
  const noting = Object.create(kafka) as Kafka;
  noting.producer = (config = {}) => {
    const createPartitioner = config.createPartitioner;
    if (createPartitioner === undefined) return kafka.producer(config);
    const notingPartitioner: ICustomPartitioner = () => {
      const partitioner = createPartitioner();
      return (args) => {
        const partition = partitioner(args);
        // A retry that partitions again differently (partitions were added meanwhile) leaves
        // the record's partition unknown: which attempt stored it is not known.
        const before = chosen.get(args.message);
        chosen.set(args.message, before === undefined || before === partition ? partition : -1);
        latest?.set(args.message, partition);
        return partition;
      };
    };
    return kafka.producer({ ...config, createPartitioner: notingPartitioner });
  };
  return noting;
}

/**
 * Where Kafka stored each record of an acknowledged send: the records of one partition went in
 * one record batch, in send order, so they hold consecutive offsets from its base offset.
 * Undefined when a record's partition is unknown or missing from the acknowledgement. Offsets
 * are counted as numbers while they stay exact (below 2^53), as bigints past that.
 */
export function locateRecords(
  sent: readonly OutgoingRecord[],
  acknowledged: readonly RecordMetadata[],
  chosen: WeakMap<Message, number>,
): PublishedRecord[] | undefined {
  /** Topic → the next offset of each acknowledged partition. */
  const next = new Map<string, (number | bigint | undefined)[]>();
  for (const meta of acknowledged) {
    if (meta.baseOffset === undefined) return undefined;
    const offsets = next.get(meta.topicName) ?? [];
    const base = Number(meta.baseOffset);
    offsets[meta.partition] = Number.isSafeInteger(base + sent.length)
      ? base
      : BigInt(meta.baseOffset);
    next.set(meta.topicName, offsets);
  }
  const located: PublishedRecord[] = [];
  for (const item of sent) {
    const partition = chosen.get(item.message);
    const offsets = next.get(item.topic);
    if (partition === undefined || partition < 0 || offsets === undefined) return undefined;
    const offset = offsets[partition];
    if (offset === undefined) return undefined;
    offsets[partition] = typeof offset === 'bigint' ? offset + 1n : offset + 1;
    const { topic, commitLsn, commitTime } = item;
    const eventId = item.event.id;
    located.push({ eventId, topic, partition, offset: String(offset), commitLsn, commitTime });
  }
  return located;
}
