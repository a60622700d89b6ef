// Testcontainers for machines with a Docker engine: the same servers as the embedded stack.
import {
  KAFKA_IMAGE,
  POSTGRES_IMAGE,
  kafkaBrokerEnvironment,
  postgresServerArgs,
} from '@sluice/stack';
import { freePort } from '@sluice/testkit';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const rootDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Containers {
  databaseUrl?: string;
  kafkaBrokers?: string[];
  stop(): Promise<void>;
}

/** Whether a Docker engine answers; false quickly on machines without one. */
export async function dockerReachable(): Promise<boolean> {
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) return false;
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

export async function startContainers(parts: {
  postgres: boolean;
  kafka: boolean;
}): Promise<Containers> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const stops: (() => Promise<unknown>)[] = [];
  const result: Containers = {
    stop: async () => {
      await Promise.all(stops.map((stop) => stop()));
    },
  };

  if (parts.postgres) {
    const postgres = await new PostgreSqlContainer(POSTGRES_IMAGE)
      .withDatabase('sluice')
      .withUsername('postgres')
      .withPassword('postgres')
      .withCommand([
        'postgres',
        ...postgresServerArgs(join(rootDir, 'infra', 'postgres', 'sluice.conf')),
      ])
      .start();
    stops.push(() => postgres.stop());
    result.databaseUrl = postgres.getConnectionUri();
  }
  if (parts.kafka) {
    // The advertised address must be the host's, so the host port is chosen before start.
    const port = await freePort();
    const kafka = await new GenericContainer(KAFKA_IMAGE)
      .withExposedPorts({ container: port, host: port })
      .withEnvironment({
        ...kafkaBrokerEnvironment(join(rootDir, 'infra', 'kafka', 'server.properties')),
        KAFKA_LISTENERS: `PLAINTEXT://0.0.0.0:${port},CONTROLLER://0.0.0.0:9093`,
        KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://127.0.0.1:${port}`,
        KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9093',
      })
      .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
      .start();
    stops.push(() => kafka.stop());
    result.kafkaBrokers = [`127.0.0.1:${port}`];
  }
  return result;
}
