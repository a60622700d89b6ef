// The oldest Kafka line Sluice promises, 3.9, while the rest of the suite runs on the newest: the
// whole pipeline on a 3.9 broker of this file's own, checked against the same invariants.
import { createKafkaServer, type KafkaServer } from '@sluice/stack';
import { freePort, uniqueName } from '@sluice/testkit';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasLocalServers } from '../relay/harness.js';
import { shoppingWorkload, startPipeline, type Pipeline } from '../support/pipeline.js';
import { settledViolations } from '../support/pipeline-invariants.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const VERSION = '3.9.2';

describe.skipIf(!hasLocalServers())(`the pipeline on Apache Kafka ${VERSION}`, () => {
  let dataDir: string | undefined;
  let running: { kafka: KafkaServer; pipeline?: Pipeline } | undefined;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'sluice-kafka39-'));
    const port = await freePort();
    let controllerPort = await freePort();
    while (controllerPort === port) controllerPort = await freePort();
    const kafka = createKafkaServer({
      kafkaHome: join(rootDir, 'infra', 'kafka'),
      dataDir,
      port,
      controllerPort,
      heap: '512m',
      version: VERSION,
    });
    running = { kafka };
    await kafka.start();
    const brokers = kafka.brokers.join(',');
    running.pipeline = await startPipeline(
      'kafka39',
      { relay: { KAFKA_BROKERS: brokers }, projector: { KAFKA_BROKERS: brokers } },
      { kafkaBrokers: kafka.brokers },
    );
  });

  afterAll(async () => {
    await running?.pipeline?.close();
    await running?.kafka.stop({ kill: true });
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
  });

  it('carries every event to the views, in order and once', async () => {
    const { kafka, pipeline } = running ?? {};
    if (kafka === undefined || pipeline === undefined) throw new Error('not started');
    const projector = pipeline.startProjector();
    await projector.waitForOutput('"msg":"consuming"', {
      timeoutMs: 60_000,
      message: `the projector to consume from Kafka ${VERSION}`,
    });
    await shoppingWorkload(pipeline, { carts: 12, rounds: 8, tag: uniqueName('k39') });
    expect(
      await settledViolations(pipeline.pool, kafka.brokers, pipeline.topicPrefix, 60_000),
    ).toEqual([]);
    expect(await pipeline.cartEventsApplied()).toBeGreaterThan(100);
  });
});
