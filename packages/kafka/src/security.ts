import { SluiceError } from '@sluice/errors';
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { SASLOptions } from 'kafkajs';

/**
 * The `KAFKA_SSL*` and `KAFKA_SASL*` settings, as `commonConfig` of @sluice/service-kit reads
 * them: an empty string is unset, and so is the mechanism `none`.
 */
export interface KafkaSecuritySettings {
  KAFKA_SSL?: boolean;
  KAFKA_SSL_CA_FILE?: string;
  KAFKA_SSL_CERT_FILE?: string;
  KAFKA_SSL_KEY_FILE?: string;
  KAFKA_SSL_REJECT_UNAUTHORIZED?: boolean;
  KAFKA_SASL_MECHANISM?: string;
  KAFKA_SASL_USERNAME?: string;
  KAFKA_SASL_PASSWORD?: string;
  KAFKA_SASL_PASSWORD_FILE?: string;
}

/** kafkajs' `ssl` and `sasl` options; both absent for a plaintext, unauthenticated connection. */
export interface KafkaSecurity {
  ssl?: ConnectionOptions;
  sasl?: SASLOptions;
}

const MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;
type Mechanism = (typeof MECHANISMS)[number];

/** A setting's value; undefined when unset or empty. */
function given(value: string | undefined): string | undefined {
  return value === '' ? undefined : value;
}

function invalid(message: string): SluiceError<'config_invalid'> {
  return new SluiceError('config_invalid', message);
}

function readSetting(name: string, path: string, read: (path: string) => string): string {
  try {
    return read(path);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw invalid(`${name} cannot be read (is ${JSON.stringify(path)}: ${String(code)})`);
  }
}

function sslOf(
  settings: KafkaSecuritySettings,
  read: (path: string) => string,
): ConnectionOptions | undefined {
  const ca = given(settings.KAFKA_SSL_CA_FILE);
  const cert = given(settings.KAFKA_SSL_CERT_FILE);
  const key = given(settings.KAFKA_SSL_KEY_FILE);
  if (settings.KAFKA_SSL !== true && ca === undefined && cert === undefined && key === undefined) {
    return undefined;
  }
  if ((cert === undefined) !== (key === undefined)) {
    throw invalid('KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together: set both or neither');
  }
  return {
    rejectUnauthorized: settings.KAFKA_SSL_REJECT_UNAUTHORIZED ?? true,
    ...(ca === undefined ? {} : { ca: readSetting('KAFKA_SSL_CA_FILE', ca, read) }),
    ...(cert === undefined ? {} : { cert: readSetting('KAFKA_SSL_CERT_FILE', cert, read) }),
    ...(key === undefined ? {} : { key: readSetting('KAFKA_SSL_KEY_FILE', key, read) }),
  };
}

function passwordOf(settings: KafkaSecuritySettings, read: (path: string) => string): string {
  const password = given(settings.KAFKA_SASL_PASSWORD);
  const file = given(settings.KAFKA_SASL_PASSWORD_FILE);
  if (password !== undefined && file !== undefined) {
    throw invalid('KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set: set one');
  }
  if (file !== undefined) return readSetting('KAFKA_SASL_PASSWORD_FILE', file, read).trimEnd();
  if (password === undefined) {
    throw invalid('KAFKA_SASL_MECHANISM needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE');
  }
  return password;
}

function saslOf(
  settings: KafkaSecuritySettings,
  read: (path: string) => string,
): SASLOptions | undefined {
  const mechanism = given(settings.KAFKA_SASL_MECHANISM);
  if (mechanism === undefined || mechanism === 'none') {
    const stray = [
      'KAFKA_SASL_USERNAME',
      'KAFKA_SASL_PASSWORD',
      'KAFKA_SASL_PASSWORD_FILE',
    ] as const;
    const set = stray.filter((name) => given(settings[name]) !== undefined);
    if (set.length > 0) throw invalid(`${set.join(', ')} set without KAFKA_SASL_MECHANISM`);
    return undefined;
  }
  if (!MECHANISMS.includes(mechanism as Mechanism)) {
    throw invalid(`KAFKA_SASL_MECHANISM must be one of ${MECHANISMS.join(', ')}`);
  }
  const username = given(settings.KAFKA_SASL_USERNAME);
  if (username === undefined) throw invalid('KAFKA_SASL_MECHANISM needs KAFKA_SASL_USERNAME');
  const password = passwordOf(settings, read);
  return { mechanism: mechanism as Mechanism, username, password };
}

/**
 * kafkajs' `ssl` and `sasl` options from the settings, reading the CA, certificate, key and
 * password files once. TLS verifies the chain and the broker's host name unless
 * `KAFKA_SSL_REJECT_UNAUTHORIZED` is false; kafkajs sends the host name as SNI (not an IP).
 *
 * @throws SluiceError `config_invalid`: a file that cannot be read, a password given twice,
 *   SASL settings without a mechanism or a mechanism without them, a certificate without its key
 * @example
 * const kafka = createKafka({ clientId: 'sluice-relay', brokers, security: kafkaSecurityOf(config) });
 */
export function kafkaSecurityOf(
  settings: KafkaSecuritySettings,
  read: (path: string) => string = (path) => readFileSync(path, 'utf8'),
): KafkaSecurity {
  const ssl = sslOf(settings, read);
  const sasl = saslOf(settings, read);
  return { ...(ssl === undefined ? {} : { ssl }), ...(sasl === undefined ? {} : { sasl }) };
}

/** Whether `security` asks for TLS or SASL. */
export function isSecured(security: KafkaSecurity | undefined): boolean {
  return security?.ssl !== undefined || security?.sasl !== undefined;
}
