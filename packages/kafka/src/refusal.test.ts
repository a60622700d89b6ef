import { describe, expect, it } from 'vitest';
import { KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded } from 'kafkajs';
import { kafkaRefusal } from './refusal.js';

const brokers = ['localhost:19094'];

/** A connection error as kafkajs wraps node's TLS errors, after its retries. */
function afterRetries(code: string, message: string): Error {
  const connection = new KafkaJSConnectionError(`Connection error: ${message}`, { code });
  return new KafkaJSNumberOfRetriesExceeded(connection, { retryCount: 1, retryTime: 200 });
}

describe('kafkaRefusal', () => {
  it('names refused SASL credentials', () => {
    const refusal = kafkaRefusal(
      Object.assign(
        new Error('SASL SCRAM SHA512 authentication failed: invalid credentials'),
        // kafkajs' class, whose constructor its types misdeclare.
        { name: 'KafkaJSSASLAuthenticationError' },
      ),
      brokers,
    );
    expect(refusal?.code).toBe('kafka_auth_failed');
    expect(refusal?.message).toMatch(/^Kafka at localhost:19094 refused the SASL credentials/);
  });

  it('names a certificate no trusted CA signed, through kafkajs wrappers', () => {
    const refusal = kafkaRefusal(
      afterRetries('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unable to verify the first certificate'),
      brokers,
    );
    expect(refusal?.code).toBe('kafka_tls_untrusted');
    expect(refusal?.message).toContain(
      '(UNABLE_TO_VERIFY_LEAF_SIGNATURE: unable to verify the first certificate)',
    );
  });

  it('names a certificate not valid for the host name', () => {
    const refusal = kafkaRefusal(
      afterRetries(
        'ERR_TLS_CERT_ALTNAME_INVALID',
        "Hostname/IP does not match certificate's altnames",
      ),
      ['127.0.0.2:19094'],
    );
    expect(refusal?.code).toBe('kafka_tls_hostname');
    expect(refusal?.message).toMatch(
      /^Kafka at 127\.0\.0\.2:19094 presented a certificate not valid/,
    );
  });

  it.each([
    ['ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN', 'sslv3 alert certificate unknown'],
    ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'tlsv1 alert unknown ca'],
    ['ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'sslv3 alert bad certificate'],
    ['ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED', 'sslv3 alert certificate expired'],
    ['ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', 'tlsv13 alert certificate required'],
  ])('names a client certificate the broker refused (%s) as refused credentials', (code, text) => {
    const refusal = kafkaRefusal(afterRetries(code, text), brokers);
    expect(refusal?.code).toBe('kafka_auth_failed');
    expect(refusal?.message).toMatch(
      /^Kafka at localhost:19094 refused the client certificate \(.+\); check KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE/,
    );
  });

  it('is no refusal when Kafka is out of reach', () => {
    expect(kafkaRefusal(afterRetries('ECONNREFUSED', 'connect ECONNREFUSED'), brokers)).toBe(
      undefined,
    );
  });
});
