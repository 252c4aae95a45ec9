// Reads the audit table's one definition, docs/athena/audit_events.sql (Athena/Hive DDL), so the Glue table
// the stack creates cannot drift from what analysts run by hand. Only the DDL forms that file uses are read;
// anything else fails loudly rather than being guessed at.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

export const AUDIT_EVENTS_SQL = path.join(__dirname, '..', '..', 'docs', 'athena', 'audit_events.sql');
/** The placeholder the SQL file uses for the audit bucket's name. */
export const BUCKET_PLACEHOLDER = '<audit-bucket>';

export interface Column {
  name: string;
  /** Hive type with the whitespace taken out, as Glue stores it (`struct<a:string,b:bigint>`). */
  type: string;
  /** The comment on the column's own line, if any. */
  comment?: string;
}

export interface TableDefinition {
  name: string;
  columns: Column[];
  partitionKeys: Column[];
  serde: string;
  serdeProperties: Record<string, string>;
  inputFormat: string;
  outputFormat: string;
  location: string;
  tableProperties: Record<string, string>;
}

/** Where a `--` comment starts on a line, outside quotes and backticks; -1 if none. */
function commentStart(line: string): number {
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '`' || c === '"') {
      quote = c;
    } else if (c === '-' && line[i + 1] === '-') {
      return i;
    }
  }
  return -1;
}

/** The text between the parenthesis at `open` and its match, outside quotes. */
function balanced(text: string, open: number): { body: string; end: number } {
  if (text[open] !== '(') throw new Error(`expected ( at ${open}`);
  let depth = 0;
  let quote: string | null = null;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '`') {
      quote = c;
    } else if (c === '(') {
      depth++;
    } else if (c === ')' && --depth === 0) {
      return { body: text.slice(open + 1, i), end: i + 1 };
    }
  }
  throw new Error('unbalanced parentheses');
}

/** Splits on commas outside (), <> and quotes. */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | null = null;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === "'" || c === '`') {
      quote = c;
    } else if (c === '(' || c === '<') {
      depth++;
    } else if (c === ')' || c === '>') {
      depth--;
    } else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

function columnsOf(body: string, comments: Map<string, string>, where: string): Column[] {
  return splitTopLevel(body).map((def) => {
    const m = /^`?([a-z_][a-z0-9_]*)`?\s+([\s\S]+)$/i.exec(def);
    if (!m) throw new Error(`${where}: cannot read column definition "${def}"`);
    const column: Column = { name: m[1], type: m[2].replace(/\s+/g, '') };
    const comment = comments.get(m[1]);
    if (comment) column.comment = comment;
    return column;
  });
}

function properties(body: string, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of splitTopLevel(body)) {
    const m = /^'([^']*)'\s*=\s*'([^']*)'$/.exec(pair);
    if (!m) throw new Error(`${where}: cannot read property "${pair}"`);
    if (m[1] in out) throw new Error(`${where}: ${m[1]} given twice`);
    out[m[1]] = m[2];
  }
  return out;
}

/** Parses the first CREATE EXTERNAL TABLE statement of an Athena DDL text. */
export function parseCreateTable(sql: string): TableDefinition {
  const comments = new Map<string, string>();
  const code = sql.split('\n').map((line) => {
    const at = commentStart(line);
    if (at < 0) return line;
    const before = line.slice(0, at);
    const col = /^\s*`?([a-z_][a-z0-9_]*)`?\s+\S/i.exec(before);
    if (col && !/^\s*(CREATE|PARTITIONED|ROW|WITH|STORED|OUTPUTFORMAT|LOCATION|TBLPROPERTIES)\b/i.test(before)) {
      comments.set(col[1], line.slice(at + 2).trim());
    }
    return before;
  }).join('\n');

  const head = /CREATE\s+EXTERNAL\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?([a-z_][a-z0-9_]*)`?\s*\(/i.exec(code);
  if (!head) throw new Error('no CREATE EXTERNAL TABLE statement');
  const statementEnd = code.indexOf(';', head.index);
  const statement = code.slice(head.index, statementEnd < 0 ? undefined : statementEnd);
  const cols = balanced(statement, head[0].length - 1);
  const rest = statement.slice(cols.end);

  const section = (re: RegExp, what: string): string => {
    const m = re.exec(rest);
    if (!m) throw new Error(`no ${what}`);
    return balanced(rest, m.index + m[0].length - 1).body;
  };
  const literal = (re: RegExp, what: string): string => {
    const m = re.exec(rest);
    if (!m) throw new Error(`no ${what}`);
    return m[1];
  };

  return {
    name: head[1],
    columns: columnsOf(cols.body, comments, 'columns'),
    partitionKeys: columnsOf(section(/PARTITIONED\s+BY\s*\(/i, 'PARTITIONED BY'), new Map(), 'partitions'),
    serde: literal(/ROW\s+FORMAT\s+SERDE\s+'([^']+)'/i, 'ROW FORMAT SERDE'),
    serdeProperties: properties(section(/WITH\s+SERDEPROPERTIES\s*\(/i, 'WITH SERDEPROPERTIES'), 'SERDEPROPERTIES'),
    inputFormat: literal(/STORED\s+AS\s+INPUTFORMAT\s+'([^']+)'/i, 'INPUTFORMAT'),
    outputFormat: literal(/OUTPUTFORMAT\s+'([^']+)'/i, 'OUTPUTFORMAT'),
    location: literal(/LOCATION\s+'([^']+)'/i, 'LOCATION'),
    tableProperties: properties(section(/TBLPROPERTIES\s*\(/i, 'TBLPROPERTIES'), 'TBLPROPERTIES'),
  };
}

/** The audit table as docs/athena/audit_events.sql declares it, with the audit bucket's name put in. */
export function auditEventsTable(bucketName: string, file = AUDIT_EVENTS_SQL): TableDefinition {
  const t = parseCreateTable(readFileSync(file, 'utf8'));
  const fill = (s: string) => s.split(BUCKET_PLACEHOLDER).join(bucketName);
  return {
    ...t,
    location: fill(t.location),
    tableProperties: Object.fromEntries(Object.entries(t.tableProperties).map(([k, v]) => [k, fill(v)])),
  };
}
