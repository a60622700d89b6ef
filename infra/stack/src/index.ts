export {
  createEmbeddedStack,
  type EmbeddedStack,
  type EmbeddedStackOptions,
  type KafkaNodeStatus,
  type KafkaSecureEndpoint,
  type StackEndpoints,
  type StackParts,
  type StackStatus,
  type StackUpOptions,
} from './embedded-stack.js';
export type { StackOwner } from './stack-owner.js';
export {
  createKafkaServer,
  type KafkaServer,
  type KafkaServerOptions,
  type SecureListenerOptions,
} from './kafka-server.js';
export {
  createKafkaCluster,
  type KafkaCluster,
  type KafkaClusterOptions,
  type KafkaNodePorts,
} from './kafka-cluster.js';
export { DEFAULT_KAFKA_VERSION, SUPPORTED_KAFKA_LINES } from './kafka-versions.js';
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
