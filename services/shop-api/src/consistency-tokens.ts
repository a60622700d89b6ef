import { SluiceError, errorMessage } from '@sluice/errors';
import { sql, type Kysely } from 'kysely';
import { createHmac, timingSafeEqual } from 'node:crypto';

/** One aggregate version a write produced; `/views/*` can wait until a projection reached it. */
export interface WrittenVersion {
  aggregateType: string;
  /** A lowercase UUID: every aggregate of this API has one. */
  aggregateId: string;
  version: number;
}

/**
 * `X-Consistency-Token`s: the versions a write produced, signed, so that a `/views/*` read waits
 * only for versions this API wrote — a made-up token cannot keep a request polling.
 */
export interface ConsistencyTokens {
  issue(versions: readonly WrittenVersion[]): string;
  /** The versions of a token this API issued; `undefined` for anything else. */
  verify(token: string): WrittenVersion[] | undefined;
}

// Token bytes: a format byte, then per version its type (length byte, ASCII), its id (16 bytes)
// and the version (6 bytes, big-endian), then the first 16 bytes of HMAC-SHA256 over all that.
const FORMAT = 1;
const ID_BYTES = 16;
const VERSION_BYTES = 6;
const MAC_BYTES = 16;
/** Far above what one write produces (two versions), far below anything costly to check. */
const MAX_TOKEN_CHARS = 1024;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const AGGREGATE_TYPE = /^[a-z_]{1,32}$/;
const MIN_SECRET_BYTES = 32;

function encode(version: WrittenVersion): Buffer {
  if (
    !AGGREGATE_TYPE.test(version.aggregateType) ||
    !UUID.test(version.aggregateId) ||
    !Number.isSafeInteger(version.version) ||
    version.version < 0 ||
    version.version >= 2 ** (8 * VERSION_BYTES)
  ) {
    throw new SluiceError(
      'consistency_token_unencodable',
      `No consistency token for ${JSON.stringify(version)}`,
    );
  }
  const bytes = Buffer.alloc(1 + version.aggregateType.length + ID_BYTES + VERSION_BYTES);
  let offset = bytes.writeUInt8(version.aggregateType.length, 0);
  offset += bytes.write(version.aggregateType, offset, 'ascii');
  offset += Buffer.from(version.aggregateId.replaceAll('-', ''), 'hex').copy(bytes, offset);
  bytes.writeUIntBE(version.version, offset, VERSION_BYTES);
  return bytes;
}

/** The versions in a signed payload; `undefined` if it is not one this code writes. */
function decode(payload: Buffer): WrittenVersion[] | undefined {
  if (payload[0] !== FORMAT) return undefined;
  const versions: WrittenVersion[] = [];
  let offset = 1;
  while (offset < payload.length) {
    const typeLength = payload.readUInt8(offset);
    const end = offset + 1 + typeLength + ID_BYTES + VERSION_BYTES;
    if (end > payload.length) return undefined;
    const aggregateType = payload.toString('ascii', offset + 1, offset + 1 + typeLength);
    const hex = payload.toString('hex', offset + 1 + typeLength, end - VERSION_BYTES);
    versions.push({
      aggregateType,
      aggregateId: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
      version: payload.readUIntBE(end - VERSION_BYTES, VERSION_BYTES),
    });
    offset = end;
  }
  return versions;
}

/**
 * Issues and verifies consistency tokens signed with HMAC-SHA256 under `secret`. Every replica
 * behind one address must share the secret ({@link storedTokenSecret} gives them one).
 *
 * @throws SluiceError `consistency_token_secret_short` for a secret under 32 bytes.
 * @example
 * const tokens = createConsistencyTokens(await storedTokenSecret(db));
 * const token = tokens.issue([{ aggregateType: 'cart', aggregateId: id, version: 3 }]);
 * tokens.verify(token); // the same versions; undefined for a token not issued with this secret
 */
export function createConsistencyTokens(secret: Uint8Array): ConsistencyTokens {
  if (secret.length < MIN_SECRET_BYTES) {
    throw new SluiceError(
      'consistency_token_secret_short',
      `The consistency token secret has ${secret.length} bytes; it needs at least ${MIN_SECRET_BYTES}`,
    );
  }
  // A key of its own, so a secret also used elsewhere never signs anything but these tokens.
  const key = createHmac('sha256', secret).update('sluice/consistency-token/v1').digest();
  const mac = (payload: Buffer) =>
    createHmac('sha256', key).update(payload).digest().subarray(0, MAC_BYTES);
  return {
    issue(versions) {
      const payload = Buffer.concat([Buffer.of(FORMAT), ...versions.map(encode)]);
      return Buffer.concat([payload, mac(payload)]).toString('base64url');
    },
    verify(token) {
      if (token.length > MAX_TOKEN_CHARS || !BASE64URL.test(token)) return undefined;
      const bytes = Buffer.from(token, 'base64url');
      // Decoding ignores the spare bits of the last character: only the spelling issued counts.
      if (bytes.length <= MAC_BYTES || bytes.toString('base64url') !== token) return undefined;
      const payload = bytes.subarray(0, bytes.length - MAC_BYTES);
      if (!timingSafeEqual(bytes.subarray(payload.length), mac(payload))) return undefined;
      return decode(payload);
    },
  };
}

/**
 * The consistency token secret kept in `sluice.api_secrets`, created once by shop-api's
 * migrations, so that replicas on one database share it without configuration.
 *
 * @throws SluiceError `consistency_token_secret_unavailable` naming what to do.
 */
export async function storedTokenSecret<DB>(db: Kysely<DB>): Promise<Buffer> {
  let secret: Buffer | undefined;
  try {
    const { rows } = await sql<{ secret: Buffer }>`
      SELECT secret FROM sluice.api_secrets WHERE name = 'consistency_token'`.execute(db);
    secret = rows[0]?.secret;
  } catch (error) {
    throw new SluiceError(
      'consistency_token_secret_unavailable',
      `Cannot read the consistency token secret from sluice.api_secrets (${errorMessage(error)}): ` +
        `apply shop-api's migrations and grant the app's role SELECT on that table, or set CONSISTENCY_TOKEN_SECRET`,
      { cause: error },
    );
  }
  if (secret === undefined) {
    throw new SluiceError(
      'consistency_token_secret_unavailable',
      "sluice.api_secrets has no 'consistency_token' row: apply shop-api's migrations, or set CONSISTENCY_TOKEN_SECRET",
    );
  }
  return secret;
}
