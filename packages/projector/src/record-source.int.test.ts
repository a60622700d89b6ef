// The Kafka record source against a real broker: Kafka's committed offsets are for lag tools
// only, so they are committed on a timer, never once per batch; a source stopped while it joins
// its group stays stopped.
import { createKafka } from '@sluice/kafka';
import { createTopics, testKafka, testServers, uniqueName, waitFor } from '@sluice/testkit';
import type { Consumer, Kafka } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { createKafkaRecordSource } from './record-source.js';

const { kafkaBrokers } = testServers();
const kafka = testKafka(kafkaBrokers);
const topic = uniqueName('source.commits');
const groupId = uniqueName('source.group');
const joining = uniqueName('source.joining');

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
  await admin.deleteTopics({ topics: [topic, joining] }).catch(() => undefined);
  await admin.disconnect();
});

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
