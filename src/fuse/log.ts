/** The daemon's log: one line per event, with a timestamp, to stderr or a file. */
import * as fs from 'node:fs';
import { oneLine } from '../errors';

export class Log {
  private readonly fd: number;
  readonly debugEnabled: boolean;

  constructor(fd: number, debug = false) {
    this.fd = fd;
    this.debugEnabled = debug;
  }

  info(msg: string): void {
    this.write('info', msg);
  }

  error(msg: string): void {
    this.write('error', msg);
  }

  debug(msg: string): void {
    if (this.debugEnabled) this.write('debug', msg);
  }

  private write(level: string, msg: string): void {
    try {
      fs.writeSync(this.fd, `${new Date().toISOString()} chainfs[${process.pid}] ${level}: ${oneLine(msg)}\n`);
    } catch {
      // a log that cannot be written must not take the daemon down
    }
  }
}
