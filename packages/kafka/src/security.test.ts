import { isSluiceError } from '@sluice/errors';
import { describe, expect, it } from 'vitest';
import { isSecured, kafkaSecurityOf, type KafkaSecuritySettings } from './security.js';

const FILES: Record<string, string> = {
  '/certs/ca.crt': 'CA PEM',
  '/certs/client.crt': 'CLIENT PEM',
  '/certs/client.key': 'KEY PEM',
  '/secrets/kafka-password': 'from-the-file\n',
};

/** Reads the files above, and records which were read. */
function files() {
  const read: string[] = [];
  return {
    read,
    readFile: (path: string): string => {
      read.push(path);
      const text = FILES[path];
      if (text === undefined) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
      return text;
    },
  };
}

function securityOf(settings: KafkaSecuritySettings) {
  return kafkaSecurityOf(settings, files().readFile);
}

function problemOf(settings: KafkaSecuritySettings): string {
  try {
    securityOf(settings);
  } catch (error) {
    if (isSluiceError(error, 'config_invalid')) return error.message;
    throw error;
  }
  throw new Error('no problem found');
}

describe('kafkaSecurityOf', () => {
  it('gives neither TLS nor SASL by default', () => {
    expect(securityOf({ KAFKA_SSL: false, KAFKA_SSL_REJECT_UNAUTHORIZED: true })).toEqual({});
    expect(
      securityOf({ KAFKA_SSL_CA_FILE: '', KAFKA_SASL_MECHANISM: 'none', KAFKA_SASL_PASSWORD: '' }),
    ).toEqual({});
    expect(isSecured(securityOf({}))).toBe(false);
  });

  it('turns TLS on with KAFKA_SSL alone, trusting the system CAs and verifying', () => {
    expect(securityOf({ KAFKA_SSL: true })).toEqual({ ssl: { rejectUnauthorized: true } });
  });

  it('reads the CA file once, which implies TLS', () => {
    const reader = files();
    const security = kafkaSecurityOf({ KAFKA_SSL_CA_FILE: '/certs/ca.crt' }, reader.readFile);
    expect(security).toEqual({ ssl: { rejectUnauthorized: true, ca: 'CA PEM' } });
    expect(reader.read).toEqual(['/certs/ca.crt']);
    expect(isSecured(security)).toBe(true);
  });

  it('gives a client certificate and key for mutual TLS', () => {
    expect(
      securityOf({
        KAFKA_SSL_CA_FILE: '/certs/ca.crt',
        KAFKA_SSL_CERT_FILE: '/certs/client.crt',
        KAFKA_SSL_KEY_FILE: '/certs/client.key',
      }),
    ).toEqual({
      ssl: { rejectUnauthorized: true, ca: 'CA PEM', cert: 'CLIENT PEM', key: 'KEY PEM' },
    });
    expect(problemOf({ KAFKA_SSL_CERT_FILE: '/certs/client.crt' })).toMatch(
      /KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together/,
    );
  });

  it('turns verification off only when asked', () => {
    expect(securityOf({ KAFKA_SSL: true, KAFKA_SSL_REJECT_UNAUTHORIZED: false })).toEqual({
      ssl: { rejectUnauthorized: false },
    });
  });

  it('names a file that cannot be read, with its path', () => {
    expect(problemOf({ KAFKA_SSL_CA_FILE: '/certs/missing.crt' })).toBe(
      'KAFKA_SSL_CA_FILE cannot be read (is "/certs/missing.crt": ENOENT)',
    );
  });

  it.each(['plain', 'scram-sha-256', 'scram-sha-512'])('authenticates with %s', (mechanism) => {
    expect(
      securityOf({
        KAFKA_SASL_MECHANISM: mechanism,
        KAFKA_SASL_USERNAME: 'sluice',
        KAFKA_SASL_PASSWORD: 's3cret',
      }),
    ).toEqual({ sasl: { mechanism, username: 'sluice', password: 's3cret' } });
  });

  it('reads the password from its file, without the trailing newline', () => {
    expect(
      securityOf({
        KAFKA_SSL: true,
        KAFKA_SASL_MECHANISM: 'scram-sha-512',
        KAFKA_SASL_USERNAME: 'sluice',
        KAFKA_SASL_PASSWORD_FILE: '/secrets/kafka-password',
      }),
    ).toEqual({
      ssl: { rejectUnauthorized: true },
      sasl: { mechanism: 'scram-sha-512', username: 'sluice', password: 'from-the-file' },
    });
  });

  it('refuses a password given both ways, and never shows it', () => {
    const problem = problemOf({
      KAFKA_SASL_MECHANISM: 'plain',
      KAFKA_SASL_USERNAME: 'sluice',
      KAFKA_SASL_PASSWORD: 's3cret',
      KAFKA_SASL_PASSWORD_FILE: '/secrets/kafka-password',
    });
    expect(problem).toBe('KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set: set one');
    expect(problem).not.toContain('s3cret');
  });

  it('refuses SASL settings that do not go together', () => {
    expect(problemOf({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_PASSWORD: 'x' })).toMatch(
      /needs KAFKA_SASL_USERNAME/,
    );
    expect(problemOf({ KAFKA_SASL_MECHANISM: 'plain', KAFKA_SASL_USERNAME: 'u' })).toMatch(
      /needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE/,
    );
    expect(problemOf({ KAFKA_SASL_USERNAME: 'u', KAFKA_SASL_PASSWORD: 'x' })).toBe(
      'KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set without KAFKA_SASL_MECHANISM',
    );
    expect(problemOf({ KAFKA_SASL_MECHANISM: 'gssapi' })).toMatch(/must be one of plain/);
  });
});
