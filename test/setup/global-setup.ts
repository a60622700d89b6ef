// Chooses the servers for a test run, once: DATABASE_URL / KAFKA_BROKERS when set, containers
// when a Docker engine is reachable, the embedded stack otherwise. Fails fast, naming the cause,
// when a server is unreachable or PostgreSQL lacks logical WAL.
import { parseBrokers } from '@sluice/kafka';
import { checkKafka, checkPostgres } from '@sluice/preflight';
import { createEmbeddedStack } from '@sluice/stack';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { dockerReachable, startContainers } from './containers.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let databaseUrl = process.env.DATABASE_URL || undefined;
  let brokers = process.env.KAFKA_BROKERS ? parseBrokers(process.env.KAFKA_BROKERS) : undefined;
  let teardown = (): Promise<void> => Promise.resolve();

  if (databaseUrl === undefined || brokers === undefined) {
    if (await dockerReachable()) {
      const containers = await startContainers({
        postgres: databaseUrl === undefined,
        kafka: brokers === undefined,
      });
      databaseUrl ??= containers.databaseUrl;
      brokers ??= containers.kafkaBrokers;
      teardown = () => containers.stop();
    } else {
      const stack = createEmbeddedStack({
        rootDir,
        log: (message) => process.stderr.write(`stack: ${message}\n`),
      });
      const before = await stack.status();
      const parts = { postgres: databaseUrl === undefined, kafka: brokers === undefined };
      const endpoints = await stack.up(parts);
      databaseUrl ??= endpoints.databaseUrl;
      brokers ??= endpoints.kafkaBrokers;
      // Leave a stack the developer started running; stop the one this run started.
      const startedHere =
        (parts.postgres && !before.postgres.running) || (parts.kafka && !before.kafka.running);
      if (startedHere) teardown = () => stack.down();
    }
  }

  if (databaseUrl === undefined || brokers === undefined) {
    throw new Error('no PostgreSQL or Kafka for the test run');
  }
  try {
    await Promise.all([checkPostgres(databaseUrl), checkKafka(brokers)]);
  } catch (error) {
    await teardown();
    throw error;
  }
  project.provide('databaseUrl', databaseUrl);
  project.provide('kafkaBrokers', brokers);
  return teardown;
}
