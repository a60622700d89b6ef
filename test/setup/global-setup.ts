// Chooses the servers for a test run, once: DATABASE_URL / KAFKA_BROKERS when set, containers
// when a Docker engine is reachable, the embedded stack otherwise. Fails fast, naming the cause,
// when a server is unreachable or PostgreSQL lacks logical WAL.
import { parseBrokers } from '@sluice/kafka';
import { checkKafka, checkPostgres } from '@sluice/preflight';
import { createEmbeddedStack, type KafkaSecureEndpoint } from '@sluice/stack';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { dockerReachable, startContainers } from './containers.js';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

declare module 'vitest' {
  export interface ProvidedContext {
    /** The embedded stack's SASL_SSL listener; null when the stack has none. */
    kafkaSecure: KafkaSecureEndpoint | null;
  }
}

/**
 * The SASL_SSL listener of the embedded stack at SLUICE_STACK_DIR and SLUICE_KAFKA_PORT (as
 * `pnpm stack:*` reads them), null when that stack never made its password.
 */
async function kafkaSecureEndpoint(): Promise<KafkaSecureEndpoint | null> {
  const { SLUICE_STACK_DIR: stateDir, SLUICE_KAFKA_PORT: port } = process.env;
  const stack = createEmbeddedStack({
    rootDir,
    ...(stateDir ? { stateDir } : {}),
    ...(port ? { kafkaPort: Number(port) } : {}),
  });
  const { secure } = (await stack.status()).kafka;
  return existsSync(secure.passwordFile) ? secure : null;
}

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
  project.provide('kafkaSecure', await kafkaSecureEndpoint());
  return teardown;
}
