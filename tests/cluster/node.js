// One node of a clustered MQTT broker for camqtt's integration tests (tests/common/cluster.rs).
//
// Aedes speaks MQTT 3.1/3.1.1 to clients on 127.0.0.1:<port>; what makes several nodes one
// broker is Redis, shared by all of them:
//   - mqemitter-redis carries every publish over Redis pub/sub, so a message published on one
//     node reaches subscribers on every node (a node hears its own messages back through Redis
//     too);
//   - aedes-persistence-redis keeps retained messages, subscriptions, offline queues and wills
//     in Redis, so a retained message stored through one node is replayed by any other, and a
//     surviving node can publish the will of a client whose node died.
//
//   node node.js --port 1883 --redis redis://127.0.0.1:6379 --id a [--heartbeat-ms 500]
// Every option also reads an environment variable: CLUSTER_PORT, CLUSTER_REDIS, CLUSTER_NODE_ID,
// CLUSTER_HEARTBEAT_MS. --redis takes a redis:// URL or a bare port on 127.0.0.1.
//
// Prints `listening on 127.0.0.1:<port> as <id>` to stdout once it accepts connections; logs to
// stderr (plain text, one line per event); exits 0 after SIGTERM or SIGINT, closing its clients
// first (their wills are published, as by any broker that shuts down).

import { createServer } from 'node:net'
import { parseArgs } from 'node:util'
import { Aedes } from 'aedes'
import mqemitterRedis from 'mqemitter-redis'
import redisPersistence from 'aedes-persistence-redis'

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.CLUSTER_PORT },
    redis: { type: 'string', default: process.env.CLUSTER_REDIS },
    id: { type: 'string', default: process.env.CLUSTER_NODE_ID },
    'heartbeat-ms': { type: 'string', default: process.env.CLUSTER_HEARTBEAT_MS || '500' },
    'log-received': { type: 'string', default: process.env.CLUSTER_LOG_RECEIVED }
  }
})

function log (msg) {
  process.stderr.write(`${new Date().toISOString()} [${args.id}] ${msg}\n`)
}

function fail (msg) {
  process.stderr.write(`node.js: ${msg}\n`)
  process.exit(2)
}

const port = Number(args.port)
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail('--port <1..65535> is required')
if (!args.redis) fail('--redis <redis://host:port | port> is required')
if (!args.id) fail('--id <node id> is required')
const heartbeatMs = Number(args['heartbeat-ms'])
if (!(heartbeatMs >= 50)) fail('--heartbeat-ms must be a number >= 50')

// ioredis options for one Redis on loopback. The URL form allows a password or a database.
const redisUrl = new URL(/^\d+$/.test(args.redis) ? `redis://127.0.0.1:${args.redis}` : args.redis)
const redis = {
  host: redisUrl.hostname,
  port: Number(redisUrl.port || 6379),
  password: redisUrl.password ? decodeURIComponent(redisUrl.password) : undefined,
  db: Number(redisUrl.pathname.slice(1) || 0)
}

// Pub/sub across nodes; `concurrency` is how many deliveries one emitter runs at once (the
// Aedes default). `matchEmptyLevels`: `a/#` also matches `a` (MQTT 3.1.1 §4.7.1.2), as Aedes
// sets it for its own in-memory emitter.
const mq = mqemitterRedis({ ...redis, concurrency: 100, matchEmptyLevels: true })
mq.state.on('error', (err) => log(`redis pub/sub: ${err.message}`))

const persistence = redisPersistence({
  ...redis,
  // How many queued QoS 1 messages a persistent session (the tests' collectors use one) gets
  // on reconnect (default 1000): a collector that was away during a burst must not lose any.
  maxSessionDelivery: 10000
})

const broker = await Aedes.createBroker({
  // The broker id: the key its wills are stored under and the name in its heartbeats. Each
  // start of a node needs a fresh id: a restarted node with its old id would look alive to its
  // peers, so the wills left by its crashed predecessor would never be published.
  id: args.id,
  mq,
  persistence,
  // Every node publishes `$SYS/<id>/heartbeat` this often. Each node checks the stored wills
  // every 4 heartbeats and publishes those of a node silent for more than 3 heartbeats: with
  // 500 ms a crashed node's wills come out 1–3.5 s later (the Aedes default, 60 s, means 3–7
  // minutes). Much lower, and a node busy for a moment would be taken for dead.
  heartbeatInterval: heartbeatMs,
  // camqtt's client ids are longer than MQTT 3.1's 23 characters (3.1.1 has no limit here).
  maxClientsIdLength: 256,
  // With --log-received <suffix>: one line `received <client> <topic> <payload>` for each
  // PUBLISH whose topic ends with <suffix>, written (synchronously: stderr is a file) before
  // Aedes acknowledges it. Aedes sends its PUBACK before it passes a message on to Redis
  // (lib/handlers/publish.js), so after a crash this log tells which messages the node had
  // acknowledged and possibly not passed on.
  authorizePublish: (client, packet, callback) => {
    if (args['log-received'] && client && packet.topic.endsWith(args['log-received'])) {
      log(`received ${client.id} ${packet.topic} ${packet.payload.toString('utf8', 0, 2048)}`)
    }
    callback(null)
  }
})
// No size limit applies to a PUBLISH: Aedes's parser (mqtt-packet) accepts the protocol's own
// maximum (256 MiB), msgpack and Redis (512 MiB per value) carry it; redis-server is started
// with no pub/sub output buffer limit (tests/common/cluster.rs) so a burst of large messages to
// a slow node is not cut.

// Aedes drops, per subscriber, every message whose broker counter is not above the highest one
// that subscriber has seen from the same node (lib/client.js `dedupe`), assuming messages
// arrive in the order they were published. They do not: a retained message is stored in Redis
// before it is passed on and is overtaken by plain messages published after it, so a `#`
// subscriber silently lost e.g. the retained `bridge/state` and discovery a client published
// right after connecting, followed by its events. mqemitter-redis already drops the second copy
// of a message Redis delivers twice (its id cache), so the counter check is turned off here.
const noDedupe = new Proxy(Object.create(null), { get: () => 0, set: () => true })

broker.on('error', (err) => log(`broker: ${err.message}`))
broker.on('client', (c) => {
  c.duplicates = noDedupe
  log(`client ${c.id} connected (protocol level ${c.version})`)
})
broker.on('clientDisconnect', (c) => log(`client ${c.id} disconnected`))
broker.on('clientError', (c, err) => log(`client ${c.id}: ${err.message}`))
broker.on('connectionError', (c, err) => log(`connection: ${err.message}`))
broker.on('keepaliveTimeout', (c) => log(`client ${c.id}: keep-alive timeout`))
broker.on('subscribe', (subs, c) =>
  log(`client ${c?.id} subscribed ${subs.map((s) => `${s.topic} (QoS ${s.qos})`).join(', ')}`))

const server = createServer(broker.handle)
server.on('error', (err) => {
  // A busy port is the usual one: the test harness retries with another.
  log(`listen on 127.0.0.1:${port}: ${err.message}`)
  process.exit(1)
})
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${port} as ${args.id}\n`)
  log(`listening on 127.0.0.1:${port}, Redis ${redis.host}:${redis.port}, heartbeat ${heartbeatMs} ms`)
})

let stopping = false
async function shutdown (signal) {
  if (stopping) return
  stopping = true
  log(`${signal}: closing`)
  // Should a step hang (Redis gone), exit anyway.
  setTimeout(() => { log('close timed out'); process.exit(1) }, 3000).unref()
  server.close() // no new connections
  try {
    await closeClients()
  } catch (err) {
    log(`closing clients: ${err.message}`)
  }
  // The emitter's Redis connections, then the persistence's.
  await new Promise((resolve) => broker.close(resolve))
  await persistence.destroy()
  log('closed')
  process.exit(0)
}

// A client whose connection the broker closes gets its will published (MQTT 3.1.1 §3.1.2.5).
// Aedes's broker.close() does publish them but does not wait: its Redis connections close under
// the publishes and the wills are lost. So close each client here, publish its will and drop
// it from Redis (else a surviving node would publish it a second time), then close the broker.
async function closeClients () {
  await Promise.all(Object.values(broker.clients).map(async (client) => {
    const will = client.will
    client.will = null // client.close() must not publish it as well
    client.close()
    if (!will) return
    await new Promise((resolve) => broker.publish(will, client, resolve))
    await persistence.delWill({ id: client.id, brokerId: broker.id })
    log(`client ${client.id}: will published on ${will.topic}`)
  }))
}

process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
