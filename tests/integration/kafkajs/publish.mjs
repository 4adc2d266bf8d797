// Publishes one Learning built from docs/schemas/learning.example.json, with a fresh id, the way a Node.js
// agent would, signed when given the agent's key.
// Usage: HIVE_KAFKA_BOOTSTRAP=host:port node publish.mjs [--idempotent] [--key-hex HEX] [example.json]
// TLS and SASL: HIVE_KAFKA_SECURITY_PROTOCOL and the other HIVE_KAFKA_SSL_* / HIVE_KAFKA_SASL_* variables, as in Python.
// Prints the published learning as JSON on stdout; exits non-zero if the broker does not acknowledge it.
import { readFileSync } from "node:fs";
import { createHmac, randomUUID } from "node:crypto";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Kafka, Partitioners, logLevel } from "kafkajs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
// Off by default: the embedded broker (Tansu 0.6) fails kafkajs' InitProducerId request with an
// "unexpected server error". The learning's id makes a resend harmless anyway: the hive dedupes by id.
const idempotent = args.includes("--idempotent");
const keyAt = args.indexOf("--key-hex");
const keyHex = keyAt >= 0 ? args[keyAt + 1] : undefined;
const positional = args.filter((a, i) => !a.startsWith("--") && (keyAt < 0 || i !== keyAt + 1));
const examplePath = positional[0] ?? resolve(here, "../../docs/schemas/learning.example.json");
const bootstrap = process.env.HIVE_KAFKA_BOOTSTRAP;
if (!bootstrap) {
  console.error("HIVE_KAFKA_BOOTSTRAP is not set");
  process.exit(2);
}

// The canonical JSON the signature covers (docs/schemas/README.md, "Signatures"): RFC 8785 style, with
// null fields and the signature left out. JSON.stringify already writes numbers and strings that way.
function canonical(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
  const keys = Object.keys(value).filter((k) => value[k] !== null && value[k] !== undefined).sort();
  return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonical(value[k])).join(",") + "}";
}

const learning = JSON.parse(readFileSync(examplePath, "utf8"));
learning.id = randomUUID(); // a new learning gets a new id; a resend would keep this one
// Whole seconds: the hive writes times back with 6 fractional digits or none, and signs what it writes.
learning.created_at = new Date().toISOString().replace(/\.\d+Z$/, "Z");
if (keyHex) {
  const { signature, ...unsigned } = learning;
  learning.signature = createHmac("sha256", Buffer.from(keyHex, "hex")).update(canonical(unsigned), "utf8").digest("hex");
}

// The listener's security, from the same HIVE_KAFKA_* variables the Python clients read (streams/config.py).
function security(env) {
  const protocol = env.HIVE_KAFKA_SECURITY_PROTOCOL ?? "PLAINTEXT";
  if (!["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].includes(protocol)) {
    throw new Error(`HIVE_KAFKA_SECURITY_PROTOCOL ${protocol} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL`);
  }
  const options = {};
  if (protocol === "SSL" || protocol === "SASL_SSL") {
    const read = (name) => (env[name] ? readFileSync(env[name]) : undefined);
    options.ssl = {
      ca: env.HIVE_KAFKA_SSL_CAFILE ? [read("HIVE_KAFKA_SSL_CAFILE")] : undefined,
      cert: read("HIVE_KAFKA_SSL_CERTFILE"),
      key: read("HIVE_KAFKA_SSL_KEYFILE"),
      passphrase: env.HIVE_KAFKA_SSL_KEY_PASSWORD,
      rejectUnauthorized: true,
    };
    if (env.HIVE_KAFKA_SSL_CHECK_HOSTNAME === "false") options.ssl.checkServerIdentity = () => undefined;
  }
  if (protocol.startsWith("SASL_")) {
    options.sasl = {
      mechanism: (env.HIVE_KAFKA_SASL_MECHANISM ?? "").toLowerCase(),
      username: env.HIVE_KAFKA_SASL_USERNAME,
      password: env.HIVE_KAFKA_SASL_PASSWORD,
    };
  }
  return options;
}

const kafka = new Kafka({
  clientId: `agent-${learning.agent_id}`,
  brokers: bootstrap.split(","),
  logLevel: logLevel.WARN,
  ...security(process.env),
});
// The Java-compatible (murmur2) partitioner, as the Python clients use: one agent's key, one partition.
const producer = kafka.producer({ idempotent, createPartitioner: Partitioners.DefaultPartitioner });
await producer.connect();
try {
  const [meta] = await producer.send({
    topic: "hive.learnings",
    acks: -1,
    messages: [{ key: learning.agent_id, value: JSON.stringify(learning) }],
  });
  console.error(`published ${learning.id} to partition ${meta.partition} at offset ${meta.baseOffset}`);
} finally {
  await producer.disconnect();
}
process.stdout.write(JSON.stringify(learning) + "\n");
