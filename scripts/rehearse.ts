/**
 * `npm run rehearse`: synthesize the stack, run its Lambda assets and GPU container the way AWS runs
 * them against the embedded S3/SQS, and print per function and task the calls made and the IAM
 * verdict. Exit 1 if any call would be denied, an artifact failed to start, or a task did not stop
 * cleanly. (The same rehearsal runs in `npm test`: test/rehearsal.test.ts.)
 */
import '../bin/hide-node-notice.js';
import { formatReport, runRehearsal } from '../test/rehearsal/run.ts';

const report = await runRehearsal({ log: (line) => process.stderr.write(`${line}\n`) });
process.stdout.write(`${formatReport(report)}\n`);
process.exit(report.denied.length || report.container.exitCode !== 0 ? 1 : 0);
