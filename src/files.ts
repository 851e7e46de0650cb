/**
 * Yes/no questions about paths, for choosing between cases (never for
 * reporting: a problem with a path is a ChainfsError from fsError).
 */
import * as fs from 'node:fs';

/** Whether `p` is a directory, following symbolic links; false when it cannot be stat'ed. */
export function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Whether anything (a link included, not followed) is at `p`. */
export function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
