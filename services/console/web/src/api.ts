// The console's JSON API (services/console/API.md): its bodies (the server's own types), and one
// fetch helper.
import type { Me } from '../../src/bodies.js';

export type {
  ActiveAlert,
  AlertRule,
  Alerts,
  AuditItem,
  Generation,
  Journey,
  JourneyEvent,
  JourneyProjection,
  Me,
  Overview,
  Parked,
  ParkedGroup,
  ParkedItem,
  PartitionLag,
  ProjectionView as Projection,
  Projections,
  RelayRole,
  RelayView,
  Stage,
  Status,
} from '../../src/bodies.js';

/** A role of `@sluice/access`. */
export type Role = Me['role'];

/** An answer other than 2xx, with the API's stable error code. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Dispatched on `window` when the API answers 401: the session expired or was revoked. */
export const SIGNED_OUT = 'sluice:signed-out';

/** Calls `/api<path>` with the session cookie; a JSON `body` is sent as such. */
export async function api<T>(path: string, method = 'GET', body?: unknown): Promise<T> {
  const response = await fetch(`/api${path}`, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  const parsed: unknown = text === '' ? undefined : JSON.parse(text);
  if (response.status === 401 && path !== '/session') dispatchEvent(new Event(SIGNED_OUT));
  if (!response.ok) {
    const error = (parsed ?? {}) as { code?: string; message?: string };
    throw new ApiError(
      response.status,
      error.code ?? 'http_error',
      error.message ?? `HTTP ${response.status}`,
    );
  }
  return parsed as T;
}

/** A query string from the set values of `params`. */
export function query(params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text === '' ? '' : `?${text}`;
}
