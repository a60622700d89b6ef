import { SluiceError } from '@sluice/errors';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from './processes.js';

/** PEM files of a private certificate authority and a server certificate it signed. */
export interface Certificates {
  /** The authority's certificate: what clients trust (`sslrootcert`, `KAFKA_SSL_CA_FILE`). */
  caFile: string;
  /** The server's certificate, for `localhost` and `127.0.0.1` only. */
  serverCertFile: string;
  /** The server's private key (PKCS#8, unencrypted, mode 0600). */
  serverKeyFile: string;
  /** A client certificate the authority signed (CN `sluice-client`), for mutual TLS. */
  clientCertFile: string;
  clientKeyFile: string;
  /** Another authority's certificate, which signed nothing here: an "unknown CA" to test with. */
  otherCaFile: string;
}

/** The names the server certificate is valid for; any other (e.g. 127.0.0.2) is a mismatch. */
export const SERVER_NAMES = 'DNS:localhost,IP:127.0.0.1';

async function openssl(args: readonly string[], cwd: string): Promise<void> {
  const result = await runCommand('openssl', args, { cwd });
  if (result.code !== 0) {
    throw new SluiceError(
      'certificates_failed',
      `openssl ${args[0] ?? ''} failed (is openssl installed?): ${result.output.slice(-1000)}`,
    );
  }
}

async function authority(dir: string, name: string): Promise<void> {
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '3650',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
    ],
    dir,
  );
}

/** A key and a certificate for `cn`, signed by the `ca` authority, with `extensions`. */
async function signed(dir: string, cn: string, extensions: string): Promise<void> {
  await writeFile(join(dir, `${cn}.ext`), extensions);
  await openssl(
    [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${cn}`,
      '-keyout',
      `${cn}.key`,
      '-out',
      `${cn}.csr`,
    ],
    dir,
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      `${cn}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '3650',
      '-out',
      `${cn}.crt`,
      '-extfile',
      `${cn}.ext`,
    ],
    dir,
  );
}

/**
 * A private certificate authority, a server certificate for `localhost`/`127.0.0.1` and a client
 * certificate, made with openssl in `dir` on first use and kept (idempotent).
 */
export async function ensureCertificates(dir: string): Promise<Certificates> {
  const files: Certificates = {
    caFile: join(dir, 'ca.crt'),
    serverCertFile: join(dir, 'server.crt'),
    serverKeyFile: join(dir, 'server.key'),
    clientCertFile: join(dir, 'sluice-client.crt'),
    clientKeyFile: join(dir, 'sluice-client.key'),
    otherCaFile: join(dir, 'other-ca.crt'),
  };
  if ((Object.values(files) as string[]).every((file) => existsSync(file))) return files;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await authority(dir, 'ca');
  await authority(dir, 'other-ca');
  await signed(dir, 'server', `subjectAltName=${SERVER_NAMES}\nextendedKeyUsage=serverAuth\n`);
  await signed(dir, 'sluice-client', 'extendedKeyUsage=clientAuth\n');
  return files;
}
