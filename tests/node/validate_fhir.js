// Validates every *.json Bundle in a folder against the official FHIR R4 JSON schema
// (@asymmetrik/fhir-json-schema-validator, installed by scripts/setup-tools.sh into .tools/node).
// Prints one line per invalid Bundle and exits 1 if any is invalid.
// Usage: node validate_fhir.js TOOLS_NODE_DIR BUNDLE_DIR
const path = require("path");
const fs = require("fs");
const Validator = require(path.join(process.argv[2], "node_modules/@asymmetrik/fhir-json-schema-validator"));
const validator = new Validator(undefined, { allErrors: true, logger: { log() {}, warn() {}, error() {} } });
const dir = process.argv[3];
let bad = 0, n = 0;
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
  n++;
  const errors = validator.validate(JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")), true);
  if (errors.length) {
    bad++;
    // the schema is a oneOf over every resource type: the errors worth reading are the deepest
    const deepest = errors
      .filter((e) => e.dataPath.startsWith(".entry") && !e.dataPath.endsWith(".resourceType"))
      .sort((a, b) => b.dataPath.length - a.dataPath.length)
      .slice(0, 3)
      .map((e) => `${e.dataPath} ${e.message} ${JSON.stringify(e.params)}`);
    console.log(f + ": " + deepest.join("; "));
  }
}
console.log(`json-schema: ${n - bad} of ${n} bundles valid`);
process.exit(bad ? 1 : 0);
