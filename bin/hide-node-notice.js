// The AWS SDK is pinned to releases that support Node 20 (see README); its notice that later
// releases need Node 22 is known and would otherwise print on every run. Imported for its effect.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  if (String(warning?.message ?? warning).startsWith('NodeVersionSupportWarning')) return;
  emitWarning(warning, ...rest);
};
