// "Bad input never yields a 500 and never changes state": every kind of malformed request
// against every write endpoint gets a 4xx problem+json with a stable code, and no row moves.
// Hand-picked cases first, then fast-check throwing arbitrary payloads at the same endpoints.
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startShopApi, type ShopApiHarness } from './test-harness.js';

let api: ShopApiHarness;

/** Rows every endpoint below needs; created once, never changed by a bad request. */
const fixture = {
  customerId: '',
  productId: '',
  cartId: '',
  customerEtag: '"1"',
  productEtag: '"1"',
};

beforeAll(async () => {
  api = await startShopApi('shop_bad_input');
  const created = async (url: string, body: unknown) => {
    const res = await api.request('POST', url, { body });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string }>().id;
  };
  fixture.customerId = await created('/customers', { email: 'ada@example.com', name: 'Ada' });
  fixture.productId = await created('/products', {
    sku: 'SKU-1',
    name: 'Widget',
    priceCents: 250,
    stock: 10,
  });
  fixture.cartId = await created('/carts', { customerId: fixture.customerId });
});
afterAll(() => api.close());

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';
type Send = () => Promise<LightMyRequestResponse>;

interface Endpoint {
  name: string;
  method: 'POST' | 'PATCH';
  url: () => string;
  /** Headers a valid request carries (If-Match for updates). */
  headers: () => Record<string, string>;
  /** A body that would succeed; only ever sent with one thing wrong. */
  valid: () => Record<string, unknown>;
  /** Fields that must be present (PATCH fields are optional, but the body must not be empty). */
  required: readonly string[];
  numeric: readonly string[];
  text: readonly string[];
  /** After a 2xx (possible only in the property tests), keeps If-Match current. */
  succeeded?: (res: LightMyRequestResponse) => void;
}

const endpoints: readonly Endpoint[] = [
  {
    name: 'POST /customers',
    method: 'POST',
    url: () => '/customers',
    headers: () => ({}),
    valid: () => ({ email: 'new@example.com', name: 'Grace' }),
    required: ['email', 'name'],
    numeric: [],
    text: ['email', 'name'],
  },
  {
    name: 'POST /products',
    method: 'POST',
    url: () => '/products',
    headers: () => ({}),
    valid: () => ({ sku: 'SKU-NEW', name: 'Gadget', priceCents: 100, stock: 5 }),
    required: ['sku', 'name', 'priceCents', 'stock'],
    numeric: ['priceCents', 'stock'],
    text: ['sku', 'name'],
  },
  {
    name: 'POST /carts',
    method: 'POST',
    url: () => '/carts',
    headers: () => ({}),
    valid: () => ({ customerId: fixture.customerId }),
    required: ['customerId'],
    numeric: [],
    text: ['customerId'],
  },
  {
    name: 'POST /carts/:id/items',
    method: 'POST',
    url: () => `/carts/${fixture.cartId}/items`,
    headers: () => ({}),
    valid: () => ({ productId: fixture.productId, quantity: 1 }),
    required: ['productId', 'quantity'],
    numeric: ['quantity'],
    text: ['productId'],
  },
  {
    name: 'PATCH /customers/:id',
    method: 'PATCH',
    url: () => `/customers/${fixture.customerId}`,
    headers: () => ({ 'if-match': fixture.customerEtag }),
    valid: () => ({ name: 'Ada L.', email: 'lovelace@example.com' }),
    required: [],
    numeric: [],
    text: ['name', 'email'],
    succeeded: (res) => {
      fixture.customerEtag = String(res.headers.etag);
    },
  },
  {
    name: 'PATCH /products/:id',
    method: 'PATCH',
    url: () => `/products/${fixture.productId}`,
    headers: () => ({ 'if-match': fixture.productEtag }),
    valid: () => ({ priceCents: 999, stock: 3 }),
    required: [],
    numeric: ['priceCents', 'stock'],
    text: [],
    succeeded: (res) => {
      fixture.productEtag = String(res.headers.etag);
    },
  },
];

/** Sends `payload` as raw text to `endpoint`, with its valid headers plus `headers`. */
function sendRaw(endpoint: Endpoint, payload: string, headers: Record<string, string> = {}) {
  return api.request(endpoint.method, endpoint.url(), {
    raw: payload,
    headers: { 'content-type': 'application/json', ...endpoint.headers(), ...headers },
  });
}

function sendJson(endpoint: Endpoint, body: unknown, headers: Record<string, string> = {}) {
  return api.request(endpoint.method, endpoint.url(), {
    body,
    headers: { ...endpoint.headers(), ...headers },
  });
}

/** Asserts a problem+json response with `status` and `code` (any code when omitted). */
function expectProblemResponse(res: LightMyRequestResponse, status: number, code?: string) {
  expect(res.statusCode, `${res.raw.req.method} ${res.raw.req.url}: ${res.body}`).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.json()).toMatchObject({
    status,
    code: code ?? expect.any(String),
    type: expect.any(String),
    title: expect.any(String),
    detail: expect.any(String),
  });
}

/** Runs `send`, expects a problem with `status` and `code`, and that no row changed. */
async function expectProblem(send: Send, status: number, code?: string) {
  const before = await api.snapshot();
  const res = await send();
  expectProblemResponse(res, status, code);
  expect(await api.snapshot()).toBe(before);
}

const without = (body: Record<string, unknown>, field: string) =>
  Object.fromEntries(Object.entries(body).filter(([key]) => key !== field));

describe.each(endpoints)('$name', (endpoint) => {
  it('400 malformed_json for malformed, truncated and empty JSON', async () => {
    const valid = JSON.stringify(endpoint.valid());
    const payloads = [
      '',
      '{',
      '}',
      '{"name":',
      "{'name':'x'}",
      '{"name":"x",}',
      '{name:"x"}',
      '{"name":"x"}}',
      '{"name":"x"} trailing',
      'NaN',
      'undefined',
      '{"quantity":1e}',
      '{"name":"\\x41"}',
      '{"name":"unterminated}',
      valid.slice(0, 1),
      valid.slice(0, valid.length / 2),
      valid.slice(0, -1),
    ];
    for (const payload of payloads) {
      await expectProblem(() => sendRaw(endpoint, payload), 400, 'malformed_json');
    }
  });

  it('415 unsupported_media_type for a body that is not JSON', async () => {
    const valid = JSON.stringify(endpoint.valid());
    const cases: [contentType: string | undefined, payload: string][] = [
      ['text/plain', valid],
      ['text/plain; charset=utf-8', valid],
      ['application/x-www-form-urlencoded', 'name=x&email=x%40example.com'],
      [
        'multipart/form-data; boundary=x',
        '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--',
      ],
      ['application/xml', '<name>x</name>'],
      ['application/octet-stream', valid],
      ['application/jsonx', valid],
      [undefined, valid],
    ];
    for (const [contentType, payload] of cases) {
      await expectProblem(
        () =>
          api.request(endpoint.method, endpoint.url(), {
            raw: payload,
            headers: {
              ...endpoint.headers(),
              ...(contentType === undefined ? {} : { 'content-type': contentType }),
            },
          }),
        415,
        'unsupported_media_type',
      );
    }
  });

  it('413 payload_too_large for a 2 MB body', async () => {
    const field = endpoint.text[0] ?? endpoint.numeric[0] ?? 'name';
    const huge = JSON.stringify({ ...endpoint.valid(), [field]: 'x'.repeat(2 * 1024 * 1024) });
    await expectProblem(() => sendRaw(endpoint, huge), 413, 'payload_too_large');
  });

  it('400 invalid_request for unknown fields, missing fields and wrong types', async () => {
    const valid = endpoint.valid();
    const bodies: unknown[] = [
      { ...valid, unknown: 1 },
      { ...valid, id: '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5a' },
      { ...valid, version: 99 },
      {},
      null,
      [],
      [valid],
      'a string',
      42,
      true,
      ...endpoint.required.map((field) => without(valid, field)),
    ];
    for (const field of Object.keys(valid)) {
      const wrong: unknown[] = [null, [], [valid[field]], {}, { value: valid[field] }, true];
      if (endpoint.numeric.includes(field)) wrong.push('5', String(valid[field]), '');
      else wrong.push(5, 0, '');
      for (const value of wrong) bodies.push({ ...valid, [field]: value });
    }
    for (const body of bodies) {
      await expectProblem(() => sendJson(endpoint, body), 400, 'invalid_request');
    }
  });

  it.skipIf(endpoint.numeric.length === 0)(
    '400 invalid_request for negative, fractional and huge numbers',
    async () => {
      const valid = endpoint.valid();
      const numbers = [-1, -0.5, 1.5, 0.1, 1e308, -1e308, 2 ** 53 + 1, Number.MAX_SAFE_INTEGER];
      for (const field of endpoint.numeric) {
        for (const value of numbers) {
          await expectProblem(
            () => sendJson(endpoint, { ...valid, [field]: value }),
            400,
            'invalid_request',
          );
        }
        // Numbers JSON.stringify cannot write: out of double range, and exponent forms.
        for (const literal of ['1e400', '-1e400', '1.0000000000000002', '9007199254740993']) {
          const body = JSON.stringify({ ...valid, [field]: 0 }).replace(
            `"${field}":0`,
            `"${field}":${literal}`,
          );
          await expectProblem(() => sendRaw(endpoint, body), 400, 'invalid_request');
        }
      }
    },
  );

  it('400 invalid_string for NUL characters and lone surrogates, in values and keys', async () => {
    const valid = endpoint.valid();
    const payloads: string[] = [
      JSON.stringify({ ...valid, 'na\u0000me': 'x' }),
      JSON.stringify({ ...valid, unknown: 'a\u0000b' }),
      JSON.stringify({ ...valid, unknown: ['ok', { deep: '\u0000' }] }),
      JSON.stringify({ ...valid, '\\ud800': 1 }).replace('"\\\\ud800"', '"\\ud800"'),
    ];
    for (const field of endpoint.text) {
      const text = String(valid[field]);
      payloads.push(
        JSON.stringify({ ...valid, [field]: `${text}\u0000` }),
        JSON.stringify({ ...valid, [field]: '\u0000' }),
      );
      // Lone surrogates only exist as escapes in JSON text: UTF-8 cannot carry them.
      for (const escape of ['\\ud800', '\\udfff', '\\udbff\\u0041', '\\udc00\\ud800']) {
        payloads.push(
          JSON.stringify({ ...valid, [field]: 'PLACEHOLDER' }).replace('PLACEHOLDER', escape),
        );
      }
    }
    for (const field of endpoint.numeric) {
      payloads.push(JSON.stringify({ ...valid, [field]: '\u0000' }));
    }
    for (const payload of payloads) {
      await expectProblem(() => sendRaw(endpoint, payload), 400, 'invalid_string');
    }
  });

  it('400 for __proto__ and constructor.prototype keys, and nothing is polluted', async () => {
    const valid = JSON.stringify(endpoint.valid());
    const payloads = [
      `{"__proto__":{"polluted":true},${valid.slice(1)}`,
      `{${valid.slice(1, -1)},"__proto__":{"polluted":true}}`,
      `{"constructor":{"prototype":{"polluted":true}},${valid.slice(1)}`,
      `{"nested":{"__proto__":{"polluted":true}},${valid.slice(1)}`,
      `[{"__proto__":{"polluted":true}}]`,
    ];
    for (const payload of payloads) {
      await expectProblem(() => sendRaw(endpoint, payload), 400);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('400 for JSON nested deeper than any schema, within the body limit', async () => {
    const depth = 20_000;
    const payloads = [
      '['.repeat(depth) + ']'.repeat(depth),
      '{"a":'.repeat(depth / 2) + '1' + '}'.repeat(depth / 2),
      JSON.stringify(endpoint.valid()).replace(
        /}$/,
        `,"deep":${'['.repeat(depth)}"\\u0000"${']'.repeat(depth)}}`,
      ),
    ];
    for (const payload of payloads) {
      await expectProblem(() => sendRaw(endpoint, payload), 400);
    }
  });

  it.runIf(endpoint.method === 'POST')(
    '400 invalid_idempotency_key for a malformed Idempotency-Key',
    async () => {
      for (const key of ['k'.repeat(300), 'has space', ' leading', 'tab\there', '']) {
        await expectProblem(
          () => sendJson(endpoint, endpoint.valid(), { 'idempotency-key': key }),
          400,
          'invalid_idempotency_key',
        );
      }
    },
  );

  it.runIf(endpoint.method === 'PATCH' || endpoint.name === 'POST /carts/:id/items')(
    '412 precondition_failed for an If-Match that is not an ETag of this resource',
    async () => {
      const values = [
        'abc',
        '"-1"',
        'W/"1"',
        '1',
        '"1',
        '""',
        '"0"',
        '"1.0"',
        '"1", "2"',
        '*',
        '"99999999999999999999"',
      ];
      for (const value of values) {
        await expectProblem(
          () => sendJson(endpoint, endpoint.valid(), { 'if-match': value }),
          412,
          'precondition_failed',
        );
      }
    },
  );
});

describe('ids in paths and query strings', () => {
  const notUuids = [
    'abc',
    '1',
    '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5',
    '0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5az',
    '0190a6e28d7e7c3a9b1e3f1e2d3c4b5a0',
    '%00',
    '%20',
    'null',
  ];

  it('400 invalid_request for a non-UUID id in a path', async () => {
    const valid = { 'content-type': 'application/json' };
    const requests: [Method, (id: string) => string, string | undefined, Record<string, string>][] =
      [
        ['GET', (id) => `/customers/${id}`, undefined, {}],
        ['PATCH', (id) => `/customers/${id}`, '{"name":"x"}', { ...valid, 'if-match': '"1"' }],
        ['DELETE', (id) => `/customers/${id}`, undefined, { 'if-match': '"1"' }],
        ['GET', (id) => `/products/${id}`, undefined, {}],
        ['PATCH', (id) => `/products/${id}`, '{"stock":1}', { ...valid, 'if-match': '"1"' }],
        ['DELETE', (id) => `/products/${id}`, undefined, { 'if-match': '"1"' }],
        ['GET', (id) => `/carts/${id}`, undefined, {}],
        [
          'POST',
          (id) => `/carts/${id}/items`,
          JSON.stringify({ productId: fixture.productId, quantity: 1 }),
          valid,
        ],
        ['DELETE', (id) => `/carts/${id}/items/${fixture.productId}`, undefined, {}],
        ['DELETE', (id) => `/carts/${fixture.cartId}/items/${id}`, undefined, {}],
        ['POST', (id) => `/carts/${id}/checkout`, undefined, {}],
        ['GET', (id) => `/orders/${id}`, undefined, {}],
      ];
    for (const [method, url, raw, headers] of requests) {
      for (const id of notUuids) {
        await expectProblem(
          () => api.request(method, url(id), { headers, ...(raw === undefined ? {} : { raw }) }),
          400,
          'invalid_request',
        );
      }
    }
  });

  it('400 invalid_request for bad cursors, limits and filters', async () => {
    const queries = [
      ...['customers', 'products', 'orders'].flatMap((resource) => [
        `/${resource}?cursor=x`,
        `/${resource}?cursor=`,
        `/${resource}?cursor=0190a6e2-8d7e-7c3a-9b1e-3f1e2d3c4b5`,
        `/${resource}?limit=0`,
        `/${resource}?limit=-1`,
        `/${resource}?limit=101`,
        `/${resource}?limit=1.5`,
        `/${resource}?limit=abc`,
        `/${resource}?limit=`,
        `/${resource}?limit=1e400`,
        `/${resource}?limit=9007199254740993`,
        `/${resource}?limit=1&limit=2`,
        `/${resource}?limit=%00`,
        `/${resource}?unknown=1`,
      ]),
      '/orders?customerId=x',
      '/orders?customerId=%00',
      `/orders?customerId=${fixture.customerId}&customerId=${fixture.customerId}`,
    ];
    for (const url of queries) {
      await expectProblem(() => api.request('GET', url), 400, 'invalid_request');
    }
  });

  it('4xx bad_url for malformed percent-encoding and over-long path parameters', async () => {
    await expectProblem(() => api.request('GET', '/customers/%E0%A4%A'), 400, 'bad_url');
    await expectProblem(() => api.request('GET', `/customers/${'a'.repeat(150)}`), 414, 'bad_url');
  });
});

describe('arbitrary payloads (property-based)', () => {
  const NUM_RUNS = 150;

  /** Valid bodies with one field swapped for any JSON value, or extra fields mixed in. */
  const nearlyValid = (endpoint: Endpoint) =>
    fc.oneof(
      fc
        .tuple(
          fc.constantFrom(...Object.keys(endpoint.valid())),
          fc.jsonValue({ stringUnit: 'binary' }),
        )
        .map(([field, value]) => JSON.stringify({ ...endpoint.valid(), [field]: value })),
      fc
        .object({ stringUnit: 'binary' })
        .map((extra) => JSON.stringify({ ...endpoint.valid(), ...extra }) as string | undefined),
    );

  /** Any JSON text, whole or cut short, and any text that is not JSON at all. */
  const anyPayload = (endpoint: Endpoint) =>
    fc.oneof(
      fc.jsonValue({ stringUnit: 'binary' }).map((value) => JSON.stringify(value)),
      fc.object({ stringUnit: 'binary' }).map((value) => JSON.stringify(value)),
      fc.anything().map((value) => JSON.stringify(value) as string | undefined),
      fc.tuple(fc.json(), fc.nat()).map(([text, cut]) => text.slice(0, cut % (text.length + 1))),
      fc.string(),
      fc.string({ unit: 'binary' }),
      // Any UTF-16 code unit as a JSON escape, with NUL and surrogate edges drawn more often.
      fc
        .oneof(
          fc.constantFrom(0, 0xd800, 0xdbff, 0xdc00, 0xdfff),
          fc.integer({ min: 0, max: 0xffff }),
        )
        .map((unit) =>
          JSON.stringify({ ...endpoint.valid(), [endpoint.text[0] ?? 'name']: 'ESCAPE' }).replace(
            'ESCAPE',
            `\\u${unit.toString(16).padStart(4, '0')}`,
          ),
        ),
      // Nesting far deeper than any schema, alone or inside an otherwise valid body.
      fc.tuple(fc.integer({ min: 1, max: 20_000 }), fc.boolean()).map(([depth, inside]) => {
        const deep = '['.repeat(depth) + ']'.repeat(depth);
        return inside ? JSON.stringify(endpoint.valid()).replace(/}$/, `,"deep":${deep}}`) : deep;
      }),
      nearlyValid(endpoint),
    );

  const contentType = fc.oneof(
    { weight: 4, arbitrary: fc.constant('application/json') },
    fc.constantFrom(
      'application/json; charset=utf-8',
      'application/json; charset=latin1',
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/problem+json',
      'text/json',
    ),
    fc.string({ unit: 'binary-ascii' }).filter((text) => /^[\x20-\x7e]+$/.test(text)),
  );

  it.each(endpoints)('$name: never a 500, and a 4xx changes nothing', async (endpoint) => {
    let state = await api.snapshot();
    await fc.assert(
      fc.asyncProperty(anyPayload(endpoint), contentType, async (payload, type) => {
        const res = await api.request(endpoint.method, endpoint.url(), {
          raw: payload ?? '',
          headers: { ...endpoint.headers(), 'content-type': type },
        });
        expect(res.statusCode, res.body).toBeLessThan(500);
        const after = await api.snapshot();
        if (res.statusCode >= 400) {
          expectProblemResponse(res, res.statusCode);
          expect(after).toBe(state);
        } else {
          endpoint.succeeded?.(res);
        }
        state = after;
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
