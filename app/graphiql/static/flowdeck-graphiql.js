/*
 * Flowdeck's GraphiQL page: the builder's operations as tabs, one token for every tab,
 * and every payload of a subscription kept in view.
 *
 * Queries and mutations go over HTTP, asking for application/graphql-response+json (the
 * body is a GraphQL response whatever the status). Subscriptions go over a WebSocket
 * (graphql-transport-ws) whose connection parameters are the tab's headers, so the same
 * {"Authorization": "Bearer fdk_…"} signs both in.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("flowdeck-graphiql-config").textContent);
  var PLACEHOLDER = "fdk_…";
  var endpoint = new URL(config.endpoint, window.location.href);
  var socket = new URL(endpoint.href);
  socket.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

  var transport = GraphiQL.createFetcher({
    url: endpoint.href,
    subscriptionUrl: socket.href,
    headers: { accept: "application/graphql-response+json, application/json;q=0.9" },
    // Plain JSON responses: without this, GraphiQL asks for multipart/mixed and wraps every
    // answer in a stream, which would read as a subscription below.
    enableIncrementalDelivery: false,
  });

  // GraphiQL keeps headers per tab; the token entered in one tab serves the others. The
  // placeholder is never sent (its "…" is not even a legal header character).
  var lastAuthorization = null;

  function withToken(headers) {
    var result = {};
    var given = null;
    Object.keys(headers || {}).forEach(function (name) {
      if (name.toLowerCase() === "authorization") {
        given = String(headers[name]);
      } else {
        result[name] = headers[name];
      }
    });
    var real = given !== null && given.indexOf(PLACEHOLDER) === -1;
    if (real) {
      lastAuthorization = given;
    }
    var chosen = real ? given : lastAuthorization;
    if (chosen !== null) {
      result.Authorization = chosen;
    }
    return result;
  }

  function isAsyncIterable(value) {
    return value != null && typeof value[Symbol.asyncIterator] === "function";
  }

  // GraphiQL shows only a subscription's latest payload; show all of them, oldest first.
  async function* everyPayload(source) {
    var payloads = [];
    for await (var payload of source) {
      payloads.push(payload);
      yield { payloads: payloads.slice() };
    }
  }

  function fetcher(params, options) {
    var signedIn = Object.assign({}, options, { headers: withToken(options && options.headers) });
    return Promise.resolve(transport(params, signedIn)).then(function (result) {
      return isAsyncIterable(result) ? everyPayload(result) : result;
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(
      GraphiQL,
      {
        fetcher: fetcher,
        defaultTabs: config.tabs,
        // The first tab's headers and new tabs' (GraphiQL takes the first tab's from here).
        defaultHeaders: config.tokenHeaders,
        defaultEditorToolsVisibility: "headers",
        isHeadersEditorEnabled: true,
        shouldPersistHeaders: true,
        inputValueDeprecation: true,
      },
      React.createElement(GraphiQL.Logo, null, "Flowdeck"),
    ),
  );
})();
