// A first start on fresh topics that several processes create at the same moment: two projectors
// and a third creator (as the relay is) ensure the same topics at once. Each projector says
// not-ready on /readyz while it waits for the topics and joins, then consumes; none exits.
import { createTopicEnsurer } from '@sluice/kafka';
import {
  createTestDatabase,
  testKafka,
  testServers,
  uniqueName,
  waitFor,
  type TestDatabase,
} from '@sluice/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shopTopics } from '../support/pipeline-invariants.js';
import { listeningAddress, startService, type ServiceProcess } from '../support/services.js';

const { databaseUrl, kafkaBrokers } = testServers();
const prefix = `${uniqueName('topicrace')}.`;
let database: TestDatabase;
const projectors: ServiceProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase(databaseUrl, 'topicrace');
});

afterAll(async () => {
  const exits = projectors.map((projector) => projector.exited());
  for (const projector of projectors) projector.kill('SIGKILL');
  await Promise.all(exits);
  await database.drop();
});

/** Every /readyz answer of `projector` until it is ready: status and problem codes. */
async function readinessUntilReady(projector: ServiceProcess): Promise<string[]> {
  const address = await waitFor(() => listeningAddress(projector), {
    timeoutMs: 30_000,
    intervalMs: 10,
    message: 'the projector to listen',
  });
  const seen: string[] = [];
  await waitFor(
    async () => {
      const response = await fetch(`${address}/readyz`);
      const body = (await response.json()) as { problems: { code: string }[] };
      seen.push(`${response.status} ${body.problems.map((p) => p.code).join(',')}`);
      return response.status === 200;
    },
    { timeoutMs: 60_000, intervalMs: 20, message: 'the projector to be ready' },
  );
  return seen;
}

describe('projectors and another creator making the same topics at once', () => {
  it('each waits, not ready, then consumes', async () => {
    const env = {
      DATABASE_URL: database.url,
      KAFKA_BROKERS: kafkaBrokers.join(','),
      PROJECTOR_TOPIC_PREFIX: prefix,
      PROJECTOR_GROUP_PREFIX: `${prefix}g.`,
      PROJECTOR_METRICS_PORT: '0',
      PROJECTOR_SESSION_TIMEOUT_MS: '6000',
    };
    projectors.push(startService('projector', env), startService('projector', env));
    await createTopicEnsurer(testKafka(kafkaBrokers))(shopTopics(prefix));
    const readiness = await Promise.all(projectors.map(readinessUntilReady));
    for (const [i, projector] of projectors.entries()) {
      expect(readiness[i]?.[0]).toMatch(/^503 .*joining/);
      await projector.waitForOutput('"msg":"consuming"', {
        timeoutMs: 10_000,
        message: 'the projector to consume',
      });
      expect(projector.output()).not.toMatch(/UNKNOWN_TOPIC_OR_PARTITION|"level":"(error|fatal)"/);
    }
  }, 90_000);
});
