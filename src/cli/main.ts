/** The chainfs command line: one file per command, wired here. */
import { Command, CommanderError } from 'commander';
import { catCommand } from './cat';
import { EXIT_USAGE, fail } from './common';
import { exportCommand } from './export';
import { errorDocument, jsonRequested } from './json';
import { inspectCommand } from './inspect';
import { mapCommand } from './map';
import { mountCommand } from './mount';
import { mountsCommand } from './mounts';
import { umountCommand } from './umount';

export function program(): Command {
  const p = new Command('chainfs')
    .description('Read Longhorn data offline, never writing to it: replica directories, data roots (a whole node), backup targets (a directory or S3) and v2 disks (SPDK lvstores)')
    .version(require('../../package.json').version)
    .exitOverride();
  // Usage errors as one line like every other error: `chainfs: unknown option '--x'`.
  const output = {
    outputError: (str: string, write: (s: string) => void) => {
      const msg = str.replace(/^error: /, '').trim();
      if (jsonRequested()) process.stdout.write(errorDocument('usage', msg));
      write(`chainfs: ${msg}\n`);
      tellLauncher(`usage ${msg}`);
    },
  };
  p.configureOutput(output);
  for (const c of [inspectCommand(), mapCommand(), catCommand(), mountCommand(), umountCommand(), mountsCommand(), exportCommand(), (require('./verify') as typeof import('./verify')).verifyCommand(), (require('./compare') as typeof import('./compare')).compareCommand(), (require('./diff') as typeof import('./diff')).diffCommand()]) {
    p.addCommand(c.exitOverride().configureOutput(output));
  }
  return p;
}

/**
 * A daemon started by a background mount (src/cli/launch.ts) gets its
 * arguments second-hand: a usage error must reach the user through the
 * ready pipe, not the daemon's log.
 */
function tellLauncher(line: string): void {
  const i = process.argv.indexOf('--ready-fd');
  const fd = i > 0 ? Number(process.argv[i + 1]) : NaN;
  if (!Number.isInteger(fd)) return;
  try {
    require('node:fs').writeSync(fd, `${line.replace(/\n/g, ' ')}\n`);
  } catch {
    // nobody is listening
  }
}

export async function main(argv: string[]): Promise<void> {
  // A reader that goes away (`chainfs export --help | head -1`) ends us
  // quietly with 141, as SIGPIPE would, whatever was writing to stdout.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(141);
    throw e;
  });
  try {
    await program().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors exit 2 (commander already printed the message)
      process.exit(e.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    fail(e);
  }
}

// bin/chainfs runs this file with Node.
if (require.main === module) void main(process.argv);
