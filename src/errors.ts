/**
 * Errors a user can cause: a bad path, corrupt metadata, a missing parent, an
 * unknown format, a full disk. The CLI prints them as one line
 * (`chainfs: FILE: MESSAGE`) and exits 1; anything else is a bug and may throw.
 */
export class ChainfsError extends Error {
  /** The file (or directory) the problem is about, when there is one. */
  readonly file: string | undefined;
  /** errno-style code for FUSE and for callers that branch on it (e.g. 'EIO'). */
  readonly code: string;

  constructor(file: string | undefined, message: string, code = 'EINVAL') {
    // One line whatever the file names and contents quoted in it hold.
    super(oneLine(file ? `${file}: ${message}` : message));
    this.name = 'ChainfsError';
    this.file = file;
    this.code = code;
  }
}

/**
 * Options that do not go together or with this kind of source (`--snapshot`
 * with `--head`, `--lvol` on a replica directory): found only once the
 * source is known, but a usage error all the same, so the CLI exits 2 as for
 * a bad option value (code 'usage' under --json).
 */
export class UsageError extends ChainfsError {
  constructor(file: string | undefined, message: string) {
    super(file, message, 'EINVAL');
    this.name = 'UsageError';
  }
}

/** A layer's bytes could not be read or are corrupt (read-time; FUSE maps it to EIO). */
export class LayerReadError extends ChainfsError {
  constructor(file: string, message: string) {
    super(file, message, 'EIO');
    this.name = 'LayerReadError';
  }
}

/** Wraps a Node fs error into a one-line ChainfsError about `file`. */
export function fsError(file: string, err: unknown, what = ''): ChainfsError {
  const e = err as NodeJS.ErrnoException;
  const reason = describeErrno(e);
  return new ChainfsError(file, what ? `${what}: ${reason}` : reason, e?.code ?? 'EIO');
}

/** The reason of an fs error in a few words ('permission denied'). */
export function describeErrno(e: NodeJS.ErrnoException): string {
  switch (e?.code) {
    case 'ENOENT': return 'no such file or directory';
    case 'EACCES': return 'permission denied';
    case 'EPERM': return 'operation not permitted';
    case 'ENOTDIR': return 'not a directory';
    case 'EISDIR': return 'is a directory';
    case 'ELOOP': return 'is a symbolic link (refused)';
    case 'ENOSPC': return 'no space left on device';
    case 'EIO': return 'input/output error';
    case 'EROFS': return 'read-only file system';
    default: return e?.message ?? String(e);
  }
}

/**
 * `s` fit for one line of a terminal or log: control characters (newlines
 * included) escaped as in JSON, and cut to `max` characters when given.
 * Messages quote file contents and names, which may hold anything.
 */
export function oneLine(s: string, max = Infinity): string {
  const t = s.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) =>
    (c === '\n' ? '\\n' : c === '\t' ? '\\t' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
  return t.length > max ? `${t.slice(0, max)}...` : t;
}
