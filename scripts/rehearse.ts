/**
 * `npm run rehearse [TIERS_FILE…]`: deploy each shipped tiers file (tiers/defaults.json and every
 * file in examples/tiers/, or the files named) the way the README says, in its order, with the
 * synthesized artifacts run as AWS runs them on the embedded S3/SQS/DynamoDB stand-ins; print per
 * file the steps and their stand-ins, each tier's first upload before and after its weights, the GPU
 * scaling tables, and per function and task the calls made and the IAM verdict. Exit 1 on a denied
 * call, a task that exited, a first upload not tagged once its weights exist (or tagged before), a
 * dead letter, or a scaling problem. (The same rehearsal runs in `npm test`: test/rehearsal.test.ts.)
 */
import '../bin/hide-node-notice.js';
import { formatReport, rehearsalProblems, runRehearsal } from '../test/rehearsal/run.ts';
import { SHIPPED_TIERS } from '../test/rehearsal/template.ts';

const files = process.argv.slice(2).length ? process.argv.slice(2) : [...SHIPPED_TIERS];
let failed = 0;
for (const tiersFile of files) {
  const report = await runRehearsal({ tiersFile, log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(`${formatReport(report)}\n\n`);
  const problems = rehearsalProblems(report);
  for (const p of problems) process.stdout.write(`PROBLEM ${p}\n`);
  failed += problems.length;
}
process.exit(failed ? 1 : 0);
