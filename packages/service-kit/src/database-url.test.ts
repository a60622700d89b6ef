import { Type } from '@sinclair/typebox';
import { SluiceError } from '@sluice/errors';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  SSL_MODES,
  commonConfig,
  configProblems,
  databaseUrlProblems,
  libpqDatabaseUrl,
  loadConfig,
  postgresTlsFailure,
} from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'database-url-'));
const ca = join(dir, 'ca.crt');
writeFileSync(ca, 'pem');
const base = 'postgres://app:s3cret@db.example.com:5432/shop';
const schema = Type.Object({ DATABASE_URL: commonConfig.DATABASE_URL });

describe('libpqDatabaseUrl', () => {
  it.each(SSL_MODES)('asks node-postgres for libpq semantics under sslmode=%s', (mode) => {
    const url = `${base}?sslmode=${mode}&sslrootcert=${ca}`;
    expect(libpqDatabaseUrl(url)).toBe(`${url}&uselibpqcompat=true`);
    expect(databaseUrlProblems(url)).toEqual([]);
  });

  it('leaves a URL without TLS parameters, or already explicit, as it is', () => {
    expect(libpqDatabaseUrl(base)).toBe(base);
    const explicit = `${base}?sslmode=require&uselibpqcompat=false`;
    expect(libpqDatabaseUrl(explicit)).toBe(explicit);
    expect(libpqDatabaseUrl(`${base}?sslrootcert=${ca}`)).toBe(
      `${base}?sslrootcert=${ca}&uselibpqcompat=true`,
    );
  });
});

describe('DATABASE_URL in commonConfig', () => {
  it('is rewritten once, at load', () => {
    const config = loadConfig(schema, { DATABASE_URL: `${base}?sslmode=require` });
    expect(config.DATABASE_URL).toBe(`${base}?sslmode=require&uselibpqcompat=true`);
    expect(loadConfig(schema, {}).DATABASE_URL).toBe('postgres://postgres@127.0.0.1:54329/sluice');
  });

  it('names each TLS problem on a line of its own, password masked', () => {
    const url = `${base}?sslmode=verify-ca&sslcert=${ca}&sslrootcert=${join(dir, 'missing.crt')}`;
    const problems = configProblems(schema, { DATABASE_URL: url });
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^DATABASE_URL sslcert and sslkey go together/);
    expect(problems[1]).toMatch(/^DATABASE_URL sslrootcert cannot be read \(.*ENOENT\)/);
    expect(problems.join('\n')).not.toContain('s3cret');
    expect(configProblems(schema, { DATABASE_URL: `${base}?sslmode=allow` })[0]).toMatch(
      /sslmode must be one of disable, prefer, require, verify-ca, verify-full/,
    );
    expect(databaseUrlProblems(`${base}?sslmode=verify-ca`)).toEqual([
      'sslmode=verify-ca needs sslrootcert (the CA to verify the server with)',
    ]);
  });
});

describe('postgresTlsFailure', () => {
  const tlsError = (code: string, message: string) => Object.assign(new Error(message), { code });

  it('tells an untrusted certificate, a host name mismatch and a server without TLS apart', () => {
    const untrusted = postgresTlsFailure(
      tlsError('SELF_SIGNED_CERT_IN_CHAIN', 'self-signed certificate in certificate chain'),
      base,
    );
    expect(untrusted?.code).toBe('postgres_tls_untrusted');
    expect(untrusted?.message).toMatch(/^PostgreSQL at db\.example\.com:5432\/shop: .*sslrootcert/);
    const mismatch = postgresTlsFailure(
      tlsError('ERR_TLS_CERT_ALTNAME_INVALID', "Hostname/IP does not match certificate's altnames"),
      base,
    );
    expect(mismatch?.code).toBe('postgres_tls_hostname');
    const plain = postgresTlsFailure(
      new Error('The server does not support SSL connections'),
      base,
    );
    expect(plain?.code).toBe('postgres_tls_unsupported');
    for (const failure of [untrusted, mismatch, plain]) {
      expect(failure).toBeInstanceOf(SluiceError);
      expect(failure?.message).not.toContain('s3cret');
    }
  });

  it('is undefined for anything else', () => {
    expect(postgresTlsFailure(tlsError('ECONNREFUSED', 'connect ECONNREFUSED'), base)).toBe(
      undefined,
    );
  });
});
