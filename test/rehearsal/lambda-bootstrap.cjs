// A stand-in for the Lambda Node.js runtime's bootstrap, run as a child process with the task root as
// its working directory and the environment the template gives the function: it requires the
// handler module from the task root (resolution sees only the task root, the layers on NODE_PATH and
// Node's built-ins, as on Lambda), reports whether the cold start succeeded, then invokes the handler
// once per event received over IPC. Plain CommonJS and Node built-ins only.
'use strict';
const path = require('node:path');

const taskRoot = process.env.LAMBDA_TASK_ROOT;
const [file, name] = process.env._HANDLER.split('.');
let handler;
try {
  handler = require(path.join(taskRoot, file))[name];
  if (typeof handler !== 'function') throw new Error(`${process.env._HANDLER} is not a function`);
  process.send({ type: 'ready' });
} catch (err) {
  process.send({ type: 'ready', error: { name: err.name, message: String(err.message), code: err.code } }, () => process.exit(1));
}

let invocation = 0;
process.on('message', async (msg) => {
  const context = {
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    awsRequestId: `rehearsal-${++invocation}`,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    getRemainingTimeInMillis: () => msg.deadline - Date.now(),
  };
  try {
    const result = await handler(msg.event, context);
    process.send({ type: 'result', id: msg.id, result: result === undefined ? null : result });
  } catch (err) {
    process.send({ type: 'result', id: msg.id, error: { name: err?.name, message: String(err?.message) } });
  }
});
