export {
  createEmbeddedStack,
  type EmbeddedStack,
  type EmbeddedStackOptions,
  type StackEndpoints,
  type StackStatus,
} from './embedded-stack.js';
export { createKafkaServer, type KafkaServer, type KafkaServerOptions } from './kafka-server.js';
export {
  createPostgresServer,
  findPostgresBinDir,
  type PostgresServer,
  type PostgresServerOptions,
} from './postgres-server.js';
