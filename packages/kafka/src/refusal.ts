import { SluiceError } from '@sluice/errors';
import type { Kafka } from 'kafkajs';
import { createKafka } from './create-kafka.js';
import type { KafkaSecurity } from './security.js';

/**
 * Why Kafka refused a connection that no retry fixes: the credentials (SASL, or the client
 * certificate of mutual TLS), a certificate the CA files do not trust, a certificate not valid
 * for the broker's host name.
 */
export type KafkaRefusalCode = 'kafka_auth_failed' | 'kafka_tls_untrusted' | 'kafka_tls_hostname';

const UNTRUSTED = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);

/**
 * TLS alerts a broker sends about the client's certificate (mutual TLS): none presented where one
 * is required, or one it does not accept. Node names an alert received `ERR_SSL_<version>_ALERT_…`.
 */
const CLIENT_CERTIFICATE_ALERT =
  /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(?:CERTIFICATE_\w+|BAD_CERTIFICATE|UNKNOWN_CA|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED)$/;

/** `error` and the errors it wraps (kafkajs' `cause` and `originalError`), outermost first. */
function chainOf(error: unknown): unknown[] {
  const chain: unknown[] = [];
  let current = error;
  while (current !== undefined && current !== null && chain.length < 10) {
    chain.push(current);
    const wrapper = current as { cause?: unknown; originalError?: unknown };
    current = wrapper.cause ?? wrapper.originalError;
  }
  return chain;
}

function field(error: unknown, name: 'code' | 'name' | 'message'): string {
  const value = (error as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : '';
}

/**
 * The refusal `error` (from kafkajs) is, as a SluiceError naming `brokers` and the cause, with
 * no secret in it; undefined when it is anything else (unreachable, timed out…).
 */
export function kafkaRefusal(
  error: unknown,
  brokers: readonly string[],
): SluiceError<KafkaRefusalCode> | undefined {
  const where = `Kafka at ${brokers.join(',')}`;
  for (const link of chainOf(error)) {
    const code = field(link, 'code');
    const message = field(link, 'message').replace(/^Connection error: /, '');
    if (field(link, 'name') === 'KafkaJSSASLAuthenticationError') {
      return new SluiceError(
        'kafka_auth_failed',
        `${where} refused the SASL credentials (${message}); check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM`,
        { cause: error },
      );
    }
    if (CLIENT_CERTIFICATE_ALERT.test(code)) {
      return new SluiceError(
        'kafka_auth_failed',
        `${where} refused the client certificate (${code}: ${/alert [\w ]+/.exec(message)?.[0] ?? message}); check KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE: a certificate and key the brokers' client CA signed`,
        { cause: error },
      );
    }
    if (UNTRUSTED.has(code)) {
      return new SluiceError(
        'kafka_tls_untrusted',
        `${where} presented a certificate that is not trusted (${code}: ${message}); set KAFKA_SSL_CA_FILE to the CA that signed it`,
        { cause: error },
      );
    }
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      return new SluiceError(
        'kafka_tls_hostname',
        `${where} presented a certificate not valid for that host name (${message}); connect by a name the certificate lists`,
        { cause: error },
      );
    }
  }
  return undefined;
}

/**
 * Connects to `kafka` once and asks for the cluster's brokers: resolves when that works.
 *
 * @throws SluiceError {@link KafkaRefusalCode} when Kafka refuses the connection; kafkajs' own
 *   error otherwise
 */
export async function verifyKafka(kafka: Kafka, brokers: readonly string[]): Promise<void> {
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.describeCluster();
  } catch (error) {
    throw kafkaRefusal(error, brokers) ?? error;
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/**
 * {@link verifyKafka} with a client of its own that gives up quickly (5 s to connect, one
 * retry): what a program runs at start to fail at once on credentials or certificates.
 */
export function probeKafka(options: {
  clientId: string;
  brokers: readonly string[];
  security: KafkaSecurity;
}): Promise<void> {
  const kafka = createKafka({
    ...options,
    connectionTimeoutMs: 5000,
    retry: { retries: 1, initialRetryTime: 200 },
  });
  return verifyKafka(kafka, options.brokers);
}
