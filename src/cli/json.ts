/**
 * The JSON conventions every command's `--json` follows (docs/json.md):
 * warnings are objects `{code, message, file?}` with a stable code, and a
 * failure is `{"error": {code, message}}` on stdout.
 *
 * Sources report warnings and errors as one-line messages (what stderr
 * shows); the codes are given here by matching those messages, first match
 * wins, so that a source need not know about JSON. A message no pattern
 * knows gets the generic code (`warning`, `failed`): scripts can still show
 * it. Codes are part of the interface: add new ones, never rename.
 */
import { ChainfsError, UsageError } from '../errors';

/** A warning as `--json` prints it. */
export interface JsonWarning {
  /** Stable, kebab-case (docs/json.md lists them). */
  code: string;
  /** The line stderr shows, without `chainfs: warning: `. */
  message: string;
  /** The file or directory it is about, when the message starts with an absolute path. */
  file?: string;
}

/** [code, pattern] in order: the first match names the warning. */
const WARNING_CODES: ReadonlyArray<readonly [string, RegExp]> = [
  ['not-root', /run chainfs as root/],
  ['not-served', /is not served/],
  ['rebuilding', /Rebuilding|being rebuilt/],
  ['dirty', /Dirty is true/],
  ['error-recorded', /Error recorded/],
  ['in-use', /in use|live head|looks in use|being written|open for writing/i],
  ['removed-snapshot', /marked Removed/],
  ['encrypted', /encrypted|LUKS/],
  ['torn-snapshot', /torn by a crash/],
  ['transient-lvol', /transient lvol/],
  ['unclean-lvstore', /not unloaded cleanly/],
  ['uuid-added', /no -<8-hex uuid> suffix/],
  ['partial-output-removed', /partial output of an export/],
  ['changed', /changed during/],
  ['duplicate-source', /given twice|same diskUUID|on several roots/],
  ['backing-mismatch', /checksum .* differs|sizes differ|backing\.cfg says size/],
  ['backing-unused', /is not used|used by no replica/],
  ['meta-recovered', /recovered in memory/],
  ['filled-holes', /allocated end to end/],
  ['backing-larger', /larger than the volume/],
  ['coarse-mtimes', /whole seconds/],
  ['skipped', /skipped/],
  ['truncated', /shorter than|truncated/],
  ['damaged', /corrupt|not usable|missing|invalid|claimed by blobs|mismatch/i],
];

/** [code, pattern] for failures, matched on the one-line message. */
const ERROR_CODES: ReadonlyArray<readonly [string, RegExp]> = [
  ['permission-denied', /permission denied|operation not permitted/i],
  ['no-space', /no space left|not enough free space|disk quota/i],
  ['exists', /already exists/],
  ['ambiguous', /ambiguous|matches several|several (volumes|replicas|roots|disks)|pick one|choose one|say which|holds \d+ (volumes|backups)/],
  ['busy', /busy/],
  ['in-use', /in use|Rebuilding|being written/],
  ['changed', /changed during/],
  // A file inside the source that is not a regular file (a FIFO .meta, a directory for a layer) is damage, not a wrong argument.
  ['corrupt', /(metadata|disk|layer) file is .*not a regular file|\.(meta|cfg|img|checksum)(: | )is .*not a regular file/],
  ['not-a-source', /not a Longhorn|is this a Longhorn|not an SPDK|is neither|not a directory|not a regular file|expected a Longhorn/],
  ['not-found', /no such file|^(.*: )?no [\w-]+|not mounted|does not exist|is gone/i],
  // a chain member or backing image that is not there (not "field X is missing": corrupt)
  ['not-found', /disk file is missing|\.meta (is|are) missing|backing image .* not found/],
  ['corrupt', /invalid|corrupt|checksum|cycle|mismatch|too (large|short)|out of range|beyond the end|not cluster-aligned|unaligned|not a multiple of|more than qemu's limit/i],
  ['unsupported', /not supported|unsupported|only raw|does not mount|newer than|not read by chainfs|unknown incompatible|backing file of its own/i],
  ['refused', /refus|inside the source/i],
  ['io-error', /input\/output error|read at byte|failed: E/],
];

/** The stable code of a warning message. */
export function warningCode(message: string): string {
  for (const [code, re] of WARNING_CODES) if (re.test(message)) return code;
  return 'warning';
}

/** A warning message as the JSON object scripts read. */
export function jsonWarning(message: string): JsonWarning {
  const file = /^(\/[^:]*): /.exec(message)?.[1];
  return { code: warningCode(message), message, ...(file ? { file } : {}) };
}

/** The stable code of a failure: `usage` for usage errors, `internal` for bugs. */
export function errorCode(err: unknown, usage = false): string {
  if (usage || err instanceof UsageError) return 'usage';
  const message = err instanceof Error ? err.message : String(err);
  const errno = (err as NodeJS.ErrnoException)?.code;
  if (errno === 'EACCES' || errno === 'EPERM') return 'permission-denied';
  if (errno === 'ENOSPC' || errno === 'EDQUOT') return 'no-space';
  for (const [code, re] of ERROR_CODES) if (re.test(message)) return code;
  if (err instanceof ChainfsError || (typeof errno === 'string' && (err as NodeJS.ErrnoException).syscall)) return 'failed';
  return 'internal';
}

/**
 * Whether this run asked for JSON (`--json`, `--output=json`, `--output
 * json`): a failure then also goes to stdout as `{"error": ...}`. Read from
 * argv so that it holds for errors before (or while) options are parsed.
 */
export function jsonRequested(argv: string[] = process.argv): boolean {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') return false;
    if (a === '--json' || a === '--output=json' || (a === '--output' && argv[i + 1] === 'json')) return true;
  }
  return false;
}

/** The document a failure prints on stdout under --json. */
export function errorDocument(code: string, message: string): string {
  return `${JSON.stringify({ error: { code, message } })}\n`;
}

/**
 * A report with every `warnings` array of strings (at any depth) turned
 * into warning objects; other values are kept as they are.
 */
export function withWarningObjects(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withWarningObjects);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = k === 'warnings' && Array.isArray(v) && v.every((w) => typeof w === 'string')
      ? (v as string[]).map(jsonWarning)
      : withWarningObjects(v);
  }
  return out;
}
