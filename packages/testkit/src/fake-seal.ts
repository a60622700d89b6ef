/**
 * A stand-in for a sealed value, in the shape `@sluice/privacy` publishes (so it validates as
 * sealed), that {@link fakeOpen} reads back without any key.
 */
export const fakeSeal = (value: string): string =>
  `sluice:enc:v1:c3ViamVjdA:AAAAAAAAAAAAAAAA:${Buffer.from(value.padEnd(17, '_')).toString('base64url')}`;

/** The value {@link fakeSeal} sealed. */
export const fakeOpen = (sealed: string): string =>
  Buffer.from(sealed.split(':').at(-1) ?? '', 'base64url')
    .toString()
    .replace(/_+$/, '');
