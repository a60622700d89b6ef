export {
  createEmbeddedStack,
  type EmbeddedStack,
  type EmbeddedStackOptions,
  type KafkaSecureEndpoint,
  type StackEndpoints,
  type StackParts,
  type StackStatus,
  type StackUpOptions,
} from './embedded-stack.js';
export type { StackOwner } from './stack-owner.js';
export { createKafkaServer, type KafkaServer, type KafkaServerOptions } from './kafka-server.js';
export {
  createPostgresServer,
  findPostgresBinDir,
  type PostgresServer,
  type PostgresServerOptions,
} from './postgres-server.js';
export {
  KAFKA_IMAGE,
  POSTGRES_IMAGE,
  kafkaBrokerEnvironment,
  postgresServerArgs,
} from './settings.js';
export { ensureCertificates, SERVER_NAMES, type Certificates } from './certificates.js';
