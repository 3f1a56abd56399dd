/** `effitag` command-line entry point. */
import { buildProgram } from './program.ts';

// `effitag … | head` closes stdout early: that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    // One clear line (plus the cause chain), never a stack trace, for expected failures.
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`effitag: ${message}\n`);
    if (process.env.EFFITAG_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exit(process.exitCode && process.exitCode !== 0 ? process.exitCode : 1);
  });
