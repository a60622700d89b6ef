// The master key every shop-api and projector of the tests runs with, and what reads their data.
import { createPrivacy, parseMasterKey, type Privacy } from '@sluice/privacy';
import { shopProtectedFields } from '@sluice/shop-catalog';

/** The tests' master key (64 hex characters, `SLUICE_MASTER_KEY`); never one to deploy. */
export const TEST_MASTER_KEY = '7e57ab1e'.repeat(8);

/** Opens the shop's sealed fields as the tests' services seal them. */
export const testPrivacy: Privacy = createPrivacy({
  keys: { current: parseMasterKey(TEST_MASTER_KEY) },
  fields: shopProtectedFields,
});
