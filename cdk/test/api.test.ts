import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { PROVIDERS, ProviderName } from '../lib/config';
import { ErrorKind, KIND_STATUS, PROVIDER_ERRORS, UNAUTHORIZED_MESSAGE, withRequestId } from '../lib/provider-errors';

// ---- the Rust sources the error shapes come from

const shared = path.join(__dirname, '..', '..', 'shared', 'src');
const rust = (file: string) => readFileSync(path.join(shared, file), 'utf8');
const PROVIDER_FILES: Record<ProviderName, string> = {
  'azure-openai': 'providers/azure_openai.rs',
  'bedrock-claude': 'providers/bedrock.rs',
  gemini: 'providers/gemini.rs',
};
const HTTP_STATUS: Record<string, number> = {
  BAD_REQUEST: 400, UNAUTHORIZED: 401, FORBIDDEN: 403, NOT_FOUND: 404, PAYLOAD_TOO_LARGE: 413,
  TOO_MANY_REQUESTS: 429, INTERNAL_SERVER_ERROR: 500, BAD_GATEWAY: 502, GATEWAY_TIMEOUT: 504,
};

/** The text of the first `fn <name>` body (balanced braces). */
function rustFn(source: string, name: string): string {
  const start = source.indexOf(`fn ${name}`);
  assert.ok(start >= 0, `fn ${name}`);
  return balanced(source, source.indexOf('{', start), '{', '}');
}
function balanced(source: string, open: number, l: string, r: string): string {
  let depth = 0;
  for (let i = open; i < source.length; i++) {
    if (source[i] === l) depth++;
    else if (source[i] === r && --depth === 0) return source.slice(open, i + 1);
  }
  throw new Error('unbalanced');
}
/** `ErrorKind::A | ErrorKind::B => <value>,` arms of a match. */
function matchArms(body: string, value: RegExp): Record<string, string> {
  const arms: Record<string, string> = {};
  const re = new RegExp(`((?:ErrorKind::\\w+\\s*\\|?\\s*)+)=>\\s*${value.source}`, 'g');
  for (const m of body.matchAll(re)) {
    for (const k of m[1].matchAll(/ErrorKind::(\w+)/g)) arms[k[1]] = m[2];
  }
  return arms;
}
/**
 * The `json!({...})` value of a function as JSON, each Rust expression (not a literal) replaced by the
 * string `<expr:...>`.
 */
function rustJson(body: string): unknown {
  const at = body.indexOf('json!(');
  const text = balanced(body, body.indexOf('{', at), '{', '}').replace(/\/\/[^\n]*/g, '');
  let out = '';
  let i = 0;
  while (i < text.length) {
    out += text[i];
    const afterKey = text[i] === ':' && /"\s*:$/.test(out);
    i++;
    if (!afterKey) continue;
    while (/\s/.test(text[i])) i++;
    if (/["{\[\d]/.test(text[i]) || text.startsWith('null', i)) continue;
    // An expression: up to the next `,` or `}` outside parentheses.
    let depth = 0;
    let end = i;
    for (; end < text.length; end++) {
      const ch = text[end];
      if ('([{'.includes(ch)) depth++;
      else if (')]}'.includes(ch) && depth-- === 0) break;
      else if (ch === ',' && depth === 0) break;
    }
    out += ` ${JSON.stringify(`<expr:${text.slice(i, end).trim()}>`)}`;
    i = end;
  }
  return JSON.parse(out.replace(/,(\s*[}\]])/g, '$1'));
}

describe('provider error shapes match the Rust code', () => {
  test('kinds and their statuses (shared/src/error.rs)', () => {
    const arms = matchArms(rustFn(rust('error.rs'), 'status'), /StatusCode::(\w+)/);
    const statuses = Object.fromEntries(Object.entries(arms).map(([k, v]) => [k, HTTP_STATUS[v]]));
    assert.deepEqual(statuses, KIND_STATUS);
  });
  test('the authentication failure message and the request id suffix', () => {
    assert.ok(rust('error.rs').replace(/\s+/g, ' ').includes(JSON.stringify(UNAUTHORIZED_MESSAGE)));
    const format = /fn with_request_id[^{]*\{\s*format!\("([^"]*)"/.exec(rust('providers/mod.rs'))![1];
    assert.equal(withRequestId('M', 'R'), format.replace('{message}', 'M').replace('{request_id}', 'R'));
  });
  for (const p of PROVIDERS) {
    test(`${p}: codes, body and headers as error_body renders them`, () => {
      const source = rust(PROVIDER_FILES[p]);
      const body = rustFn(source, 'error_body');
      const codes = matchArms(body, /"(\w+)"/);
      assert.deepEqual(codes, PROVIDER_ERRORS[p].codes);
      const shape = rustJson(body);
      for (const kind of Object.keys(KIND_STATUS) as ErrorKind[]) {
        const expected = substitute(shape, (expr) => {
          if (expr === 'with_request_id(message, request_id)') return withRequestId('M', 'R');
          if (expr === 'request_id') return 'R';
          if (expr === 'kind.status().as_u16()') return KIND_STATUS[kind];
          if (/^\w+$/.test(expr)) return codes[kind]; // the match's binding (code, status)
          throw new Error(`${p}: unknown expression ${expr}`);
        });
        const rendered = PROVIDER_ERRORS[p].render(kind, 'M', 'R');
        assert.deepEqual(rendered.body, expected, `${p} ${kind}`);
        // Headers: the ones the Rust code adds, except the request id API Gateway sets itself.
        const rustHeaders = [...body.matchAll(/\((\w+),\s*HeaderValue::from_static\((\w+)\)\)/g)].map((m) => {
          const name = new RegExp(`const ${m[1]}: HeaderName = HeaderName::from_static\\("([^"]+)"\\)`).exec(source)![1];
          return [name, codes[kind]];
        });
        assert.deepEqual(Object.entries(rendered.headers).map(([n, v]) => [n.toLowerCase(), v]), rustHeaders, `${p} ${kind} headers`);
      }
    });
  }
});

function substitute(v: unknown, f: (expr: string) => unknown): unknown {
  if (typeof v === 'string' && v.startsWith('<expr:')) return f(v.slice(6, -1));
  if (Array.isArray(v)) return v.map((x) => substitute(x, f));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, substitute(x, f)]));
  return v;
}
