export {
  createAccess,
  type Access,
  type AccessErrorCode,
  type AccessOptions,
  type Principal,
  type Role,
} from './access.js';
export { accessConfigSchema, accessOptionsOf, type AccessConfig } from './config.js';
export {
  createJwtVerifier,
  JwtRefusal,
  verifyJwt,
  type JwtChecks,
  type JwtVerifierOptions,
  type JwtRefusalCode,
  type VerifiedClaims,
} from './jwt.js';
export { hashPassword } from './passwords.js';
export { SESSION_COOKIE, principalOf, requireRole } from './require-role.js';
