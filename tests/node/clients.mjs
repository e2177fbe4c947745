// Runs the README's client snippets (extracted by tests/test_clients.py) against a live TaskQL.
// Usage: node clients.mjs <snippets dir> <http url> <access token> <project id> apollo|urql|watch
// apollo, urql: a query, a mutation and a subscription's event through that client; prints one JSON line.
// watch: watchTaskEvents, printing each event as a JSON line until killed.
import WebSocket from "ws";

globalThis.WebSocket ??= WebSocket; // what a browser has; Node 20 does not
const [dir, httpUrl, token, projectId, mode] = process.argv.slice(2);
const config = { httpUrl, wsUrl: httpUrl.replace(/^http/, "ws"), getToken: () => token };
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 60_000);
const fail = (error) => { console.error(JSON.stringify(error?.message ?? error)); process.exit(1); };

const VIEWER = "{ viewer { name } }";
const CREATE_TASK = `mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { task { id title } } }`;
const EVENTS = `subscription($p: ID!) { taskEvents(projectId: $p, after: "0-0") { kind task { title } } }`;
const title = `from ${mode}`;

if (mode === "apollo") {
  const { gql } = await import("@apollo/client");
  const { createApollo } = await import(`${dir}/apollo.mjs`);
  const client = createApollo(config);
  const viewer = await client.query({ query: gql(VIEWER) });
  const created = await client.mutate({ mutation: gql(CREATE_TASK), variables: { p: projectId, t: title } });
  client.subscribe({ query: gql(EVENTS), variables: { p: projectId } }).subscribe({
    next: ({ data }) => {
      if (data.taskEvents.task?.title !== title) return;
      console.log(JSON.stringify({ viewer: viewer.data.viewer.name, created: created.data.createTask.task.title,
                                   event: data.taskEvents.kind }));
      clearTimeout(timer);
      process.exit(0);
    },
    error: fail,
  });
} else if (mode === "urql") {
  const { createUrql } = await import(`${dir}/urql.mjs`);
  const client = createUrql(config);
  const viewer = await client.query(VIEWER, {}).toPromise();
  const created = await client.mutation(CREATE_TASK, { p: projectId, t: title }).toPromise();
  if (viewer.error || created.error) fail(viewer.error ?? created.error);
  client.subscription(EVENTS, { p: projectId }).subscribe((result) => {
    if (result.error) fail(result.error);
    if (result.data.taskEvents.task?.title !== title) return;
    console.log(JSON.stringify({ viewer: viewer.data.viewer.name, created: created.data.createTask.task.title,
                                 event: result.data.taskEvents.kind }));
    clearTimeout(timer);
    process.exit(0);
  });
} else if (mode === "watch") {
  clearTimeout(timer); // runs until the test ends it
  const { watchTaskEvents } = await import(`${dir}/task-events.mjs`);
  watchTaskEvents({ ...config, projectId, onEvent: (event) => console.log(JSON.stringify(event)), onError: fail });
} else {
  fail(`unknown mode ${mode}`);
}
