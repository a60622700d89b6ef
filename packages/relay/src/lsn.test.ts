import { describe, expect, it } from 'vitest';
import { Lsn } from './lsn.js';

describe('Lsn', () => {
  it('parses and formats PostgreSQL text, padded or not', () => {
    expect(Lsn.format(Lsn.parse('16/B374D848'))).toBe('16/B374D848');
    expect(Lsn.parse('00000016/0B374D84')).toBe(Lsn.parse('16/B374D84'));
    expect(Lsn.format(Lsn.zero)).toBe('0/0');
  });

  it('compares numerically where text comparison fails', () => {
    expect(Lsn.parse('0/A') < Lsn.parse('0/10')).toBe(true);
    expect(Lsn.parse('1/0') > Lsn.parse('0/FFFFFFFF')).toBe(true);
    expect(Lsn.max(Lsn.parse('1/0'), Lsn.parse('0/FFFFFFFF'))).toBe(Lsn.parse('1/0'));
  });

  it('rejects what is not an LSN', () => {
    for (const bad of ['', '0', '0/', 'G/0', '123456789/0', '0/0/0'])
      expect(() => Lsn.parse(bad)).toThrow(/Not an LSN/);
    expect(() => Lsn.of(-1n)).toThrow(/out of range/);
  });
});
