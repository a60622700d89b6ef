// The Kafka record source against a real broker: Kafka's committed offsets are for lag tools
// only, so they are committed on a timer, never once per batch; a source stopped while it joins
// its group stays stopped.
import { createKafka } from '@sluice/kafka';
import { createTopics, testKafka, testServers, uniqueName, waitFor } from '@sluice/testkit';
import type { Consumer, Kafka, Producer } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { createKafkaRecordSource } from './record-source.js';

const { kafkaBrokers } = testServers();
const kafka = testKafka(kafkaBrokers);
const topic = uniqueName('source.commits');
const groupId = uniqueName('source.group');
const joining = uniqueName('source.joining');
const lingering = uniqueName('source.linger');
const sharing = uniqueName('source.linger.shared');

/** `kafka` whose consumers count the OffsetCommit requests they send. */
function countingCommits(base: Kafka, counter: { commits: number }): Kafka {
  return new Proxy(base, {
    get(target, property, receiver) {
      if (property !== 'consumer') return Reflect.get(target, property, receiver) as unknown;
      return (...args: Parameters<Kafka['consumer']>): Consumer => {
        const consumer = target.consumer(...args);
        consumer.on(consumer.events.REQUEST, ({ payload }) => {
          if (payload.apiName === 'OffsetCommit') counter.commits += 1;
        });
        return consumer;
      };
    },
  });
}

afterAll(async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic, joining, lingering, sharing] }).catch(() => undefined);
  await admin.disconnect();
});

/** 5,000 records of 1 KB in `partition`: more than one fetch takes from a partition (4 MiB). */
async function writeBacklog(producer: Producer, to: string, partition: number) {
  const kilobyte = 'x'.repeat(1000);
  for (let i = 0; i < 10; i += 1)
    await producer.send({
      topic: to,
      messages: Array.from({ length: 500 }, (_, j) => ({
        partition,
        value: `${i * 500 + j} ${kilobyte}`,
      })),
    });
}

const LINGER_MS = 5000;

/** A source reading `on` with a linger of {@link LINGER_MS}, recording every batch it delivers. */
async function recordingLinger(on: string) {
  const source = createKafkaRecordSource({
    kafka,
    groupId: uniqueName(`${on}.group`),
    topics: [on],
    sessionTimeoutMs: 10_000,
    fetchLingerMs: LINGER_MS,
  });
  const batches: { partition: number; size: number; at: number }[] = [];
  await source.start({
    batch: (batch) =>
      Promise.resolve(
        void batches.push({
          partition: batch.partition,
          size: batch.records.length,
          at: Date.now(),
        }),
      ),
    assigned: () => undefined,
    crashed: () => undefined,
  });
  /** Records delivered, of `partition` or of all. */
  const received = (partition?: number) =>
    batches
      .filter((b) => partition === undefined || b.partition === partition)
      .reduce((sum, { size }) => sum + size, 0);
  return { source, batches, received };
}

describe('Kafka record source', () => {
  it('commits offsets on a timer, not per batch', async () => {
    await createTopics(kafkaBrokers, [{ topic, numPartitions: 1 }]);
    const producer = kafka.producer();
    await producer.connect();
    const counter = { commits: 0 };
    const source = createKafkaRecordSource({
      kafka: countingCommits(kafka, counter),
      groupId,
      topics: [topic],
      sessionTimeoutMs: 10_000,
      commitIntervalMs: 2000,
    });
    let received = 0;
    await source.start({
      batch: (batch) => Promise.resolve(void (received += batch.records.length)),
      assigned: () => undefined,
      crashed: () => undefined,
    });
    // Ten batches, each produced after the last was consumed: ten fetches, ten batches.
    for (let i = 1; i <= 10; i += 1) {
      await producer.send({ topic, messages: [{ key: 'k', value: `v${i}` }] });
      await waitFor(() => received === i, { timeoutMs: 15_000, message: `batch ${i}` });
    }
    expect(counter.commits).toBeLessThanOrEqual(2);
    // Then the timer commits where it stands.
    const admin = kafka.admin();
    await admin.connect();
    const committed = async () =>
      (await admin.fetchOffsets({ groupId, topics: [topic] }))[0]?.partitions[0]?.offset;
    await waitFor(async () => (await committed()) === '10', {
      timeoutMs: 10_000,
      message: 'the offsets committed',
    });
    expect(counter.commits).toBeLessThanOrEqual(3);
    await source.stop();
    await producer.disconnect();
    await admin.disconnect();
  }, 60_000);

  it('waits before the next fetch once a batch reached its end, not while behind', async () => {
    await createTopics(kafkaBrokers, [{ topic: lingering, numPartitions: 1 }]);
    const producer = kafka.producer();
    await producer.connect();
    // Behind: 5 MB, more than one fetch takes from a partition (4 MiB), written before the start.
    await writeBacklog(producer, lingering, 0);
    const { source, batches, received } = await recordingLinger(lingering);
    await waitFor(() => received() === 5000, { timeoutMs: 30_000, message: 'the backlog' });
    expect(batches.length).toBeGreaterThan(1);
    // Fetched again at once while behind: well within one linger.
    expect((batches.at(-1)?.at ?? 0) - (batches[0]?.at ?? 0)).toBeLessThan(LINGER_MS);
    // At its end: the records written during the linger come in one fetch.
    const caughtUp = batches.length;
    for (let i = 0; i < 3; i += 1)
      await producer.send({ topic: lingering, messages: [{ value: `late ${i}` }] });
    await waitFor(() => received() === 5003, { timeoutMs: 30_000, message: 'the late records' });
    expect(batches.slice(caughtUp).map(({ size }) => size)).toEqual([3]);
    await source.stop();
    await producer.disconnect();
  }, 90_000);

  it('does not wait after a fetch in which another partition is behind, and a stop ends a wait', async () => {
    await createTopics(kafkaBrokers, [{ topic: sharing, numPartitions: 2 }]);
    const producer = kafka.producer();
    await producer.connect();
    // Partition 0 behind by more than one fetch; partition 1 at its end after its one record.
    await writeBacklog(producer, sharing, 0);
    await producer.send({ topic: sharing, messages: [{ partition: 1, value: 'alone' }] });
    const { source, batches, received } = await recordingLinger(sharing);
    await waitFor(() => received(0) === 5000 && received(1) === 1, {
      timeoutMs: 30_000,
      message: 'both partitions',
    });
    const behind = batches.filter((b) => b.partition === 0);
    expect(behind.length).toBeGreaterThan(1);
    expect((behind.at(-1)?.at ?? 0) - (behind[0]?.at ?? 0)).toBeLessThan(LINGER_MS);
    // Caught up on both: the next record starts a wait, which a stop cuts short.
    await producer.send({ topic: sharing, messages: [{ partition: 1, value: 'late' }] });
    await waitFor(() => received(1) === 2, { timeoutMs: 30_000, message: 'the late record' });
    const stopping = Date.now();
    await source.stop();
    expect(Date.now() - stopping).toBeLessThan(LINGER_MS - 1000);
    await producer.disconnect();
  }, 90_000);

  // kafkajs' consumer.disconnect() stops its runner only once the group is joined: a stop in the
  // middle of a join closed the connections under it, the join's next step crashed, and kafkajs
  // logged the crash as an error and started the consumer again 300 ms later, after its stop.
  it('stopped while it joins its group: no error logged, and it does not start again', async () => {
    await createTopics(kafkaBrokers, [{ topic: joining, numPartitions: 1 }]);
    const logged: { level: string; message: string }[] = [];
    const log =
      (level: string) =>
      (_fields: Record<string, unknown>, message: string): void =>
        void logged.push({ level, message });
    const source = createKafkaRecordSource({
      kafka: createKafka({
        clientId: 'record-source-test',
        brokers: kafkaBrokers,
        logger: { error: log('error'), warn: log('warn'), info: log('info'), debug: log('debug') },
      }),
      groupId: uniqueName('source.joining.group'),
      topics: [joining],
      sessionTimeoutMs: 10_000,
    });
    let stopped: Promise<void> | undefined;
    await source.start({
      batch: () => Promise.resolve(),
      // Called in the join itself, before kafkajs marks its runner running.
      assigned: () => void (stopped ??= source.stop()),
      crashed: () => undefined,
    });
    await waitFor(() => stopped !== undefined, { message: 'stopped in the join' });
    await stopped;
    // A restart would come 300 ms after the crash; watch for three times as long.
    const watchUntil = Date.now() + 1000;
    await waitFor(() => Date.now() > watchUntil, { timeoutMs: 5000, intervalMs: 100 });
    expect(logged.filter(({ level }) => level === 'error' || level === 'warn')).toEqual([]);
    expect(logged.filter(({ message }) => message.startsWith('Restarting'))).toEqual([]);
  }, 60_000);
});
