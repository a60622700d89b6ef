import { SluiceError } from '@sluice/errors';
import type { RelayErrorCode } from './errors.js';

/**
 * A PostgreSQL WAL position (`pg_lsn`) as a value: a 64-bit unsigned integer, compared as a
 * number, never as text ('0/A' > '0/10' as strings).
 *
 * @example Lsn.parse('16/B374D848') > Lsn.parse('9/FFFFFFFF') // true
 */
export type Lsn = bigint & { readonly __brand: 'Lsn' };

const MAX = (1n << 64n) - 1n;

export const Lsn = {
  /** `0/0`: before any WAL. */
  zero: 0n as Lsn,

  /**
   * Parses `X/Y` (hex halves).
   *
   * @throws SluiceError `lsn_invalid`
   */
  parse(text: string): Lsn {
    const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
    if (match?.[1] === undefined || match[2] === undefined) {
      throw new SluiceError<RelayErrorCode>('lsn_invalid', `Not an LSN: ${JSON.stringify(text)}`);
    }
    return ((BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`)) as Lsn;
  },

  /** From a non-negative integer. @throws SluiceError `lsn_invalid` */
  of(value: bigint | number): Lsn {
    const big = BigInt(value);
    if (big < 0n || big > MAX)
      throw new SluiceError<RelayErrorCode>('lsn_invalid', `LSN out of range: ${big}`);
    return big as Lsn;
  },

  /** `X/Y` as PostgreSQL prints it (upper-case hex, no padding). */
  format(lsn: Lsn): string {
    return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
  },

  max(a: Lsn, b: Lsn): Lsn {
    return a > b ? a : b;
  },
};
