// Testcontainers for machines with a Docker engine: the same servers as the embedded stack.
import { existsSync } from 'node:fs';
import { freePort } from '@sluice/testkit';

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
    const postgres = await new PostgreSqlContainer('postgres:17')
      .withDatabase('sluice')
      .withUsername('postgres')
      .withPassword('postgres')
      .withCommand([
        'postgres',
        '-c',
        'wal_level=logical',
        '-c',
        'max_replication_slots=64',
        '-c',
        'max_wal_senders=64',
        '-c',
        'max_connections=400',
      ])
      .start();
    stops.push(() => postgres.stop());
    result.databaseUrl = postgres.getConnectionUri();
  }
  if (parts.kafka) {
    // The advertised address must be the host's, so the host port is chosen before start.
    const port = await freePort();
    const kafka = await new GenericContainer('apache/kafka:3.9.2')
      .withExposedPorts({ container: port, host: port })
      .withEnvironment({
        KAFKA_NODE_ID: '1',
        KAFKA_PROCESS_ROLES: 'broker,controller',
        KAFKA_LISTENERS: `PLAINTEXT://0.0.0.0:${port},CONTROLLER://0.0.0.0:9093`,
        KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://127.0.0.1:${port}`,
        KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
        KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9093',
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
        KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
      })
      .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
      .start();
    stops.push(() => kafka.stop());
    result.kafkaBrokers = [`127.0.0.1:${port}`];
  }
  return result;
}
