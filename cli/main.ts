/** `effitag` command-line entry point. */
import { messageOf } from '../base/errors.ts';
import { awsHint } from './aws-hints.ts';
import { printable } from './format.ts';
import { buildProgram } from './program.ts';

// `effitag … | head` closes stdout early: that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    // One clear line (plus the cause chain), never a stack trace, for expected failures; a key in
    // the message cannot steer the terminal.
    // The AWS SDK's set-up errors get their fix appended (cli/aws-hints.ts).
    const hint = awsHint(err);
    process.stderr.write(`effitag: ${printable(messageOf(err) + (hint ? `: ${hint}` : ''), { keepNewlines: true })}\n`);
    if (process.env.EFFITAG_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exit(process.exitCode && process.exitCode !== 0 ? process.exitCode : 1);
  });
