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
    super(file ? `${file}: ${message}` : message);
    this.name = 'ChainfsError';
    this.file = file;
    this.code = code;
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

function describeErrno(e: NodeJS.ErrnoException): string {
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
