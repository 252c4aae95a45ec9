// The errors API Gateway itself answers with (401, 403, 429, 5xx, ...), rendered the way each provider's
// API renders its errors, so the stock SDKs (openai, boto3, google-genai) raise their usual exceptions.
// These tables mirror `error_body` in shared/src/providers/{azure_openai,bedrock,gemini}.rs and
// `ErrorKind::status` in shared/src/error.rs; test/api.test.ts reads those sources and holds the
// tables to them.
import { ProviderName } from './config';

/** shared/src/error.rs `ErrorKind`: the gateway's own error kinds. */
export type ErrorKind =
  | 'BadRequest' | 'Unauthorized' | 'Forbidden' | 'NotFound' | 'PayloadTooLarge' | 'RateLimited'
  | 'Internal' | 'BadGateway' | 'GatewayTimeout';

/** `ErrorKind::status`. */
export const KIND_STATUS: Record<ErrorKind, number> = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  PayloadTooLarge: 413,
  RateLimited: 429,
  Internal: 500,
  BadGateway: 502,
  GatewayTimeout: 504,
};

/** The one message for every authentication failure (`GatewayError::unauthorized`). */
export const UNAUTHORIZED_MESSAGE =
  'Unauthorized: the gateway token or API key is missing, expired or invalid. Sign in again for a fresh token, or ask an administrator for a new key.';

/** `with_request_id` in shared/src/providers/mod.rs: the message a client sees. */
export function withRequestId(message: string, requestId: string): string {
  return `${message} (gateway request id: ${requestId})`;
}

export interface RenderedError {
  /** Extra headers (beyond content-type), exact names as the provider's API sends them. */
  headers: Record<string, string>;
  body: unknown;
}

export interface ProviderErrorShape {
  /** The provider's name for each kind: Azure's `error.code`, Bedrock's error type, Gemini's `error.status`. */
  codes: Record<ErrorKind, string>;
  render(kind: ErrorKind, message: string, requestId: string): RenderedError;
}

const azureOpenai: ProviderErrorShape = {
  codes: {
    BadRequest: 'BadRequest',
    Unauthorized: 'Unauthorized',
    Forbidden: 'PermissionDenied',
    NotFound: 'NotFound',
    PayloadTooLarge: 'PayloadTooLarge',
    RateLimited: 'RateLimitExceeded',
    Internal: 'InternalServerError',
    BadGateway: 'BadGateway',
    GatewayTimeout: 'Timeout',
  },
  render(kind, message, requestId) {
    return {
      headers: {},
      body: {
        error: {
          code: this.codes[kind],
          message: withRequestId(message, requestId),
          type: 'gateway_error',
          param: null,
          request_id: requestId,
        },
      },
    };
  },
};

// botocore reads the error code from x-amzn-ErrorType and the message from the body's `message`.
const bedrock: ProviderErrorShape = {
  codes: {
    BadRequest: 'ValidationException',
    Unauthorized: 'UnrecognizedClientException',
    Forbidden: 'AccessDeniedException',
    NotFound: 'ResourceNotFoundException',
    PayloadTooLarge: 'ValidationException',
    RateLimited: 'ThrottlingException',
    Internal: 'InternalServerException',
    BadGateway: 'InternalServerException',
    GatewayTimeout: 'ModelTimeoutException',
  },
  render(kind, message, requestId) {
    // The Rust code also sets x-amzn-requestid; API Gateway sets that header on every response itself,
    // to the same id ($context.requestId).
    return {
      headers: { 'x-amzn-ErrorType': this.codes[kind] },
      body: { message: withRequestId(message, requestId) },
    };
  },
};

const gemini: ProviderErrorShape = {
  codes: {
    BadRequest: 'INVALID_ARGUMENT',
    Unauthorized: 'UNAUTHENTICATED',
    Forbidden: 'PERMISSION_DENIED',
    NotFound: 'NOT_FOUND',
    PayloadTooLarge: 'INVALID_ARGUMENT',
    RateLimited: 'RESOURCE_EXHAUSTED',
    Internal: 'INTERNAL',
    BadGateway: 'UNAVAILABLE',
    GatewayTimeout: 'DEADLINE_EXCEEDED',
  },
  render(kind, message, requestId) {
    return {
      headers: {},
      body: { error: { code: KIND_STATUS[kind], message: withRequestId(message, requestId), status: this.codes[kind] } },
    };
  },
};

export const PROVIDER_ERRORS: Record<ProviderName, ProviderErrorShape> = {
  'azure-openai': azureOpenai,
  'bedrock-claude': bedrock,
  gemini,
};

/**
 * API Gateway's response types and what each means to a client, as one of the gateway's error kinds. The
 * status sent is the kind's status, so a provider shape that carries the status (Gemini's `code`) agrees
 * with the HTTP status. Messages are fixed text: nothing from the request is echoed (gateway response
 * templates substitute variables without JSON-escaping them).
 */
export interface GatewayErrorSpec {
  /** `AWS::ApiGateway::GatewayResponse` ResponseType. */
  type: string;
  kind: ErrorKind;
  message: string;
}

export const GATEWAY_ERRORS: GatewayErrorSpec[] = [
  // The authorizer's `Unauthorized` error, and token types only IAM authorization uses.
  { type: 'UNAUTHORIZED', kind: 'Unauthorized', message: UNAUTHORIZED_MESSAGE },
  { type: 'EXPIRED_TOKEN', kind: 'Unauthorized', message: UNAUTHORIZED_MESSAGE },
  { type: 'INVALID_SIGNATURE', kind: 'Unauthorized', message: UNAUTHORIZED_MESSAGE },
  // The authorizer's Deny. Its reason (in the context) is not shown: it quotes the model and operation
  // read from the request, and the template could not escape it. The audit record under the request id
  // has it.
  {
    type: 'ACCESS_DENIED', kind: 'Forbidden',
    message: 'Forbidden: the gateway\'s scope policy does not allow this operation or model for your account; the platform team can look up the reason by the request id',
  },
  // No usage-plan key came back for the caller (no department group, or none configured for it).
  {
    type: 'INVALID_API_KEY', kind: 'Forbidden',
    message: 'Forbidden: your account has no department with a usage plan on this gateway; ask the platform team to add you to a department group',
  },
  {
    type: 'WAF_FILTERED', kind: 'Forbidden',
    message: 'Forbidden: the gateway\'s firewall refused this request (source address not allowed, or a blocked request pattern)',
  },
  // A path no resource serves (outside /<provider>/ on an execute-api URL, or the bare base path).
  { type: 'MISSING_AUTHENTICATION_TOKEN', kind: 'NotFound', message: 'Not found: this path is not an API the gateway serves on this route' },
  { type: 'RESOURCE_NOT_FOUND', kind: 'NotFound', message: 'Not found: this path is not an API the gateway serves on this route' },
  {
    type: 'THROTTLED', kind: 'RateLimited',
    message: 'Too many requests: your department\'s or the gateway\'s request rate limit was exceeded; retry after a short pause',
  },
  {
    type: 'QUOTA_EXCEEDED', kind: 'RateLimited',
    message: 'Too many requests: your department\'s daily request quota is used up; it resets at 00:00 UTC',
  },
  { type: 'REQUEST_TOO_LARGE', kind: 'PayloadTooLarge', message: 'request body exceeds API Gateway\'s 10 MB limit' },
  { type: 'BAD_REQUEST_BODY', kind: 'BadRequest', message: 'Bad request: the request body could not be read' },
  { type: 'BAD_REQUEST_PARAMETERS', kind: 'BadRequest', message: 'Bad request: the request parameters could not be read' },
  // 415 is no kind of the gateway's; with binary media types */* it should not occur.
  { type: 'UNSUPPORTED_MEDIA_TYPE', kind: 'BadRequest', message: 'Bad request: unsupported media type' },
  { type: 'DEFAULT_4XX', kind: 'BadRequest', message: 'Bad request: the gateway refused the request' },
  { type: 'AUTHORIZER_FAILURE', kind: 'Internal', message: 'the gateway could not check the token; try again' },
  { type: 'AUTHORIZER_CONFIGURATION_ERROR', kind: 'Internal', message: 'the gateway could not check the token; try again' },
  { type: 'API_CONFIGURATION_ERROR', kind: 'Internal', message: 'the gateway is misconfigured; try again later or contact the platform team' },
  { type: 'INTEGRATION_FAILURE', kind: 'BadGateway', message: 'the gateway\'s route function could not be reached; try again' },
  { type: 'INTEGRATION_TIMEOUT', kind: 'GatewayTimeout', message: 'the request ran into the gateway\'s 15-minute limit' },
  { type: 'DEFAULT_5XX', kind: 'Internal', message: 'the gateway failed; try again' },
];

/** The API Gateway variable that holds the request id, the same id the functions and the audit trail use. */
export const REQUEST_ID_VARIABLE = '$context.requestId';

/** One gateway response for one provider: status, static headers (quoted for API Gateway) and template. */
export function gatewayResponse(provider: ProviderName, spec: GatewayErrorSpec): {
  statusCode: string;
  responseHeaders: Record<string, string>;
  template: string;
} {
  const rendered = PROVIDER_ERRORS[provider].render(spec.kind, spec.message, REQUEST_ID_VARIABLE);
  // A `$` would start another template variable.
  if (spec.message.includes('$')) throw new Error(`${spec.type}: a message cannot contain $`);
  const responseHeaders: Record<string, string> = {};
  for (const [name, value] of Object.entries(rendered.headers)) {
    if (value.includes('\'')) throw new Error(`${spec.type}: header ${name} cannot hold a quote`);
    responseHeaders[name] = `'${value}'`;
  }
  return { statusCode: String(KIND_STATUS[spec.kind]), responseHeaders, template: JSON.stringify(rendered.body) };
}

// ---- the admin API's errors (docs: identity contract; functions/admin-api)

/** The admin API's error codes and their statuses (the function's own codes, plus `throttled`). */
export const ADMIN_CODE_STATUS = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  payload_too_large: 413,
  unsupported_media_type: 415,
  throttled: 429,
  internal: 500,
} as const;
export type AdminErrorCode = keyof typeof ADMIN_CODE_STATUS;

/**
 * One of API Gateway's responses on the admin API: `{"error": {"code", "message"}}`, the admin API's
 * shape. The status is the code's, except 502/504 (integration failure, timeout), which keep their own
 * status with code `internal` ("5xx internal").
 */
export interface AdminGatewayErrorSpec {
  type: string;
  code: AdminErrorCode;
  status: number;
  message: string;
}

const adminError = (type: string, code: AdminErrorCode, message: string, status: number = ADMIN_CODE_STATUS[code]): AdminGatewayErrorSpec =>
  ({ type, code, status, message });

const ADMIN_UNAUTHORIZED = 'Unauthorized: the access token is missing, expired, revoked or invalid. Sign in again to get a fresh token.';
const ADMIN_NOT_FOUND = 'Not found: the admin API serves /admin/users, /admin/users/{id}/..., /admin/apikeys, /admin/apikeys/{id}/... and /admin/system/health';
const ADMIN_AUTH_FAILED = 'the gateway could not check the token; try again';

/** Every response type of GATEWAY_ERRORS, in the admin shape (test/api.test.ts holds the two lists together). */
export const ADMIN_GATEWAY_ERRORS: AdminGatewayErrorSpec[] = [
  adminError('UNAUTHORIZED', 'unauthorized', ADMIN_UNAUTHORIZED),
  adminError('EXPIRED_TOKEN', 'unauthorized', ADMIN_UNAUTHORIZED),
  adminError('INVALID_SIGNATURE', 'unauthorized', ADMIN_UNAUTHORIZED),
  // The authorizer's Deny: each admin resource has its scope pair (admin:users, admin:apikeys, admin:billing);
  // reading needs its :read scope (group gateway-admin-readers), changing the scope itself (gateway-admins).
  adminError('ACCESS_DENIED', 'forbidden', 'Forbidden: your account lacks the admin scope this request needs (the resource\'s read scope to read, e.g. admin:apikeys:read; its scope to change it, e.g. admin:apikeys)'),
  // No method requires an API key here; kept so every response type has the admin shape.
  adminError('INVALID_API_KEY', 'forbidden', 'Forbidden: the request was refused'),
  adminError('WAF_FILTERED', 'forbidden', 'Forbidden: the gateway\'s firewall refused this request (source address not allowed, or a blocked request pattern)'),
  adminError('MISSING_AUTHENTICATION_TOKEN', 'not_found', ADMIN_NOT_FOUND),
  adminError('RESOURCE_NOT_FOUND', 'not_found', ADMIN_NOT_FOUND),
  adminError('THROTTLED', 'throttled', 'Too many requests: the gateway\'s request rate limit was exceeded; retry after a short pause'),
  adminError('QUOTA_EXCEEDED', 'throttled', 'Too many requests: a request quota is used up; retry later'),
  adminError('REQUEST_TOO_LARGE', 'payload_too_large', 'request body exceeds API Gateway\'s 10 MB limit (upload HR files with POST /admin/users/csv/upload)'),
  adminError('BAD_REQUEST_BODY', 'bad_request', 'Bad request: the request body could not be read'),
  adminError('BAD_REQUEST_PARAMETERS', 'bad_request', 'Bad request: the request parameters could not be read'),
  adminError('UNSUPPORTED_MEDIA_TYPE', 'unsupported_media_type', 'Unsupported media type: send JSON (application/json)'),
  adminError('DEFAULT_4XX', 'bad_request', 'Bad request: the gateway refused the request'),
  adminError('AUTHORIZER_FAILURE', 'internal', ADMIN_AUTH_FAILED),
  adminError('AUTHORIZER_CONFIGURATION_ERROR', 'internal', ADMIN_AUTH_FAILED),
  adminError('API_CONFIGURATION_ERROR', 'internal', 'the gateway is misconfigured; try again later or contact the platform team'),
  adminError('INTEGRATION_FAILURE', 'internal', 'the admin API function could not be reached; try again', 502),
  adminError('INTEGRATION_TIMEOUT', 'internal', 'the request ran into the admin API\'s 29-second limit', 504),
  adminError('DEFAULT_5XX', 'internal', 'the gateway failed; try again'),
];

/** The admin error body; the message ends with the request id, as the providers' gateway responses do. */
export function renderAdminError(code: AdminErrorCode, message: string, requestId: string): { error: { code: string; message: string } } {
  return { error: { code, message: withRequestId(message, requestId) } };
}

/** One gateway response of the admin API: status, no extra header, template. */
export function adminGatewayResponse(spec: AdminGatewayErrorSpec): {
  statusCode: string;
  responseHeaders: Record<string, string>;
  template: string;
} {
  if (spec.message.includes('$')) throw new Error(`${spec.type}: a message cannot contain $`);
  return {
    statusCode: String(spec.status),
    responseHeaders: {},
    template: JSON.stringify(renderAdminError(spec.code, spec.message, REQUEST_ID_VARIABLE)),
  };
}
