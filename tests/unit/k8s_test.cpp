// The Kubernetes object model (k8s.hpp) and the cluster file (cluster_file.hpp): parsing,
// validation with file positions, warnings, selectors, names, the template hash, JSON.

#include "flatnet/netmodel/k8s.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "flatnet/netmodel/cluster_file.hpp"
#include "flatnet/netmodel/error.hpp"

namespace flatnet::netmodel {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

ClusterFile parse(std::string_view yaml) {
  return parse_cluster_file(yaml, "test.yaml");
}

// The 1-based number of the line that holds the marker "#!" (0 when none does).
int marked_line(std::string_view text) {
  int line = 1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 2, "#!") == 0) return line;
    if (text[i] == '\n') ++line;
  }
  return 0;
}

// --- good files ---

constexpr std::string_view kTwoNode = R"(# a comment before the first document
apiVersion: flatnet/v1alpha1
kind: Cluster
metadata:
  name: two-node
nodes:
  - name: node-1
    labels:
      topology.kubernetes.io/zone: zone-a
  - node-2
podCIDR: 10.200.0.0/16
podCIDRMaskSize: 24
nodeCIDR: 192.168.50.0/24
serviceCIDR: 10.96.0.0/12
network: flat
cni: bridge
mtu: 9000
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
        tier: front
      annotations:
        note: "1"
    spec:
      containers:
        - name: web
          image: agnhost:2.47
          args: ["netexec"]
          ports:
            - name: http
              containerPort: 8080 #!
              protocol: TCP
            - name: udp
              containerPort: 8081
              protocol: UDP
---
---
apiVersion: v1
kind: Pod
metadata:
  name: dns
  namespace: kube-system
spec:
  nodeName: node-1
  containers:
    - name: dns
      image: coredns
      ports:
        - containerPort: 53
          protocol: UDP
        - containerPort: 53
          protocol: TCP
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeSelector:
    topology.kubernetes.io/zone: zone-a
  containers:
    - name: client
      image: agnhost
status:
  phase: Running
)";

TEST(K8sClusterFileGood, ParsesEveryKindIntoTheModel) {
  const ClusterFile f = parse(kTwoNode);
  EXPECT_EQ(f.origin, "test.yaml");
  ASSERT_TRUE(f.cluster.has_value());
  const ClusterSpec& c = *f.cluster;
  EXPECT_EQ(c.name, "two-node");
  ASSERT_EQ(c.nodes.size(), 2u);
  EXPECT_EQ(c.nodes[0].name, "node-1");
  EXPECT_EQ(c.nodes[0].labels, (Labels{{"topology.kubernetes.io/zone", "zone-a"}}));
  EXPECT_EQ(c.nodes[1], (NodeSpec{.name = "node-2", .labels = {}}));
  EXPECT_EQ(c.pod_cidr, IpPrefix::parse("10.200.0.0/16"));
  EXPECT_EQ(c.pod_subnet_prefix_length, 24u);
  EXPECT_EQ(c.node_cidr, IpPrefix::parse("192.168.50.0/24"));
  EXPECT_EQ(c.service_cidr, IpPrefix::parse("10.96.0.0/12"));
  EXPECT_EQ(c.network, Network::flat);
  EXPECT_EQ(c.cni, CniKind::bridge);
  EXPECT_EQ(c.mtu, 9000u);

  ASSERT_EQ(f.deployments.size(), 1u);
  const Deployment& d = f.deployments[0];
  EXPECT_EQ(d.meta.name, "web");
  EXPECT_EQ(d.meta.namespace_, "default");
  EXPECT_EQ(d.meta.labels, (Labels{{"app", "web"}}));
  EXPECT_EQ(d.replicas, 3);
  EXPECT_EQ(d.selector.match_labels, (Labels{{"app", "web"}}));
  EXPECT_TRUE(d.selector.match_expressions.empty());
  EXPECT_EQ(d.template_.meta.labels, (Labels{{"app", "web"}, {"tier", "front"}}));
  EXPECT_EQ(d.template_.meta.annotations, (Labels{{"note", "1"}}));
  ASSERT_EQ(d.template_.spec.containers.size(), 1u);
  EXPECT_EQ(d.template_.spec.containers[0].name, "web");
  EXPECT_THAT(
      d.template_.spec.containers[0].ports,
      ElementsAre(ContainerPort{.name = "http", .container_port = 8080, .protocol = Protocol::tcp},
                  ContainerPort{.name = "udp", .container_port = 8081, .protocol = Protocol::udp}));

  ASSERT_EQ(f.pods.size(), 2u);
  EXPECT_EQ(f.pods[0].meta.name, "dns");
  EXPECT_EQ(f.pods[0].meta.namespace_, "kube-system");
  EXPECT_EQ(f.pods[0].spec.node_name, "node-1");
  EXPECT_THAT(
      f.pods[0].spec.containers[0].ports,
      ElementsAre(ContainerPort{.name = "", .container_port = 53, .protocol = Protocol::udp},
                  ContainerPort{.name = "", .container_port = 53, .protocol = Protocol::tcp}));
  EXPECT_EQ(f.pods[1].meta.name, "client");
  EXPECT_EQ(f.pods[1].spec.node_selector, (Labels{{"topology.kubernetes.io/zone", "zone-a"}}));
  EXPECT_TRUE(f.pods[1].spec.containers[0].ports.empty());
  EXPECT_NO_THROW(validate_against(f, c));
}

TEST(K8sClusterFileGood, RemembersWhereEachObjectAndFieldWasWritten) {
  const ClusterFile f = parse(kTwoNode);
  ASSERT_EQ(f.deployment_sources.size(), 1u);
  ASSERT_EQ(f.pod_sources.size(), 2u);
  EXPECT_EQ(f.cluster_source.position.line, 2);
  EXPECT_EQ(f.deployment_sources[0].position.line, 19);
  const SourcePosition port =
      f.deployment_sources[0].at("spec.template.spec.containers[0].ports[0].containerPort");
  EXPECT_EQ(port.line, marked_line(kTwoNode));
  EXPECT_EQ(port.column, 30);
  EXPECT_EQ(f.pod_sources[0].at("spec.nodeName").line, 59);
  EXPECT_EQ(f.pod_sources[0].at("no.such.field"), f.pod_sources[0].position);
}

TEST(K8sClusterFileGood, WarnsOnceForEachIgnoredField) {
  const ClusterFile f = parse(kTwoNode);
  std::vector<std::string> fields;
  for (const auto& w : f.warnings)
    fields.push_back(w.object + " " + w.field);
  EXPECT_THAT(fields, ElementsAre("Deployment \"web\" spec.template.spec.containers[0].image",
                                  "Deployment \"web\" spec.template.spec.containers[0].args",
                                  "Deployment \"web\" spec.strategy",
                                  "Pod \"kube-system/dns\" spec.containers[0].image",
                                  "Pod \"client\" status"));
  // The image of pod "client" repeats the (kind, path) of pod "dns".
  EXPECT_EQ(f.warnings[3].count, 2);
  EXPECT_EQ(f.warnings[3].to_string(),
            "test.yaml:62:7: warning: Pod \"kube-system/dns\": spec.containers[0].image: not part "
            "of the network model; ignored (and 1 more like it)");
  EXPECT_EQ(f.warnings[0].file, "test.yaml");
  EXPECT_EQ(f.warnings[0].line, 42);
  EXPECT_EQ(f.warnings[0].column, 11);
}

TEST(K8sClusterFileGood, AHundredPodsGiveOneWarningPerField) {
  std::string yaml;
  for (int i = 0; i < 100; ++i) {
    yaml += "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p" + std::to_string(i) +
            "\n  uid: x\nspec:\n  restartPolicy: Always\n  containers:\n"
            "    - name: c\n      image: busybox\n      command: [sleep, inf]\n"
            "      resources: {limits: {cpu: 1}}\n";
  }
  const ClusterFile f = parse(yaml);
  EXPECT_EQ(f.pods.size(), 100u);
  ASSERT_EQ(f.warnings.size(), 5u);
  for (const auto& w : f.warnings)
    EXPECT_EQ(w.count, 100) << w.to_string();
  EXPECT_EQ(f.warnings[0].field, "metadata.uid");
  EXPECT_EQ(f.warnings[4].field, "spec.restartPolicy");
}

TEST(K8sClusterFileGood, NodesAsACountAndTheDefaults) {
  const ClusterFile f =
      parse("apiVersion: flatnet/v1alpha1\nkind: Cluster\nname: demo\nnodes: 3\n");
  ASSERT_TRUE(f.cluster);
  ClusterSpec want;
  want.name = "demo";
  want.nodes = {{.name = "node-1", .labels = {}},
                {.name = "node-2", .labels = {}},
                {.name = "node-3", .labels = {}}};
  EXPECT_EQ(*f.cluster, want);
  EXPECT_EQ(f.cluster->pod_cidr.to_string(), "10.244.0.0/16");
  EXPECT_EQ(f.cluster->node_cidr.to_string(), "172.18.0.0/24");
  EXPECT_EQ(f.cluster->service_cidr.to_string(), "10.96.0.0/16");
  EXPECT_EQ(f.cluster->pod_subnet_prefix_length, 24u);
  EXPECT_EQ(f.cluster->network, Network::routed);
  EXPECT_EQ(f.cluster->cni, CniKind::flatnet);
  EXPECT_EQ(f.cluster->mtu, 1500u);
  EXPECT_TRUE(f.warnings.empty());
}

TEST(K8sClusterFileGood, ClusterWithoutNodesHasTwoAndBothNameFormsMayAgree) {
  const ClusterFile f =
      parse("apiVersion: flatnet/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nname: demo\n");
  ASSERT_TRUE(f.cluster);
  EXPECT_EQ(f.cluster->name, "demo");
  EXPECT_EQ(f.cluster->nodes, default_cluster().nodes);
}

TEST(K8sClusterFileGood, WithoutAClusterDocumentTheCallerChoosesTheDefault) {
  const ClusterFile f =
      parse("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n");
  EXPECT_FALSE(f.cluster.has_value());
  EXPECT_EQ(f.pods.size(), 1u);
  const ClusterSpec d = default_cluster();
  EXPECT_EQ(d.name, "flatnet");
  ASSERT_EQ(d.nodes.size(), 2u);
  EXPECT_EQ(d.nodes[0].name, "node-1");
  EXPECT_EQ(d.nodes[1].name, "node-2");
  EXPECT_EQ(d.pod_cidr.to_string(), "10.244.0.0/16");
}

TEST(K8sClusterFileGood, EmptyFilesAndDocumentsAreSkipped) {
  for (const std::string_view text :
       {"", "\n", "# only a comment\n", "---\n---\n", "--- \n...\n"}) {
    const ClusterFile f = parse(text);
    EXPECT_FALSE(f.cluster) << text;
    EXPECT_TRUE(f.pods.empty() && f.deployments.empty() && f.warnings.empty()) << text;
  }
}

TEST(K8sClusterFileGood, DeploymentWithMatchExpressions) {
  const ClusterFile f = parse(R"(apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: prod}
spec:
  replicas: 0
  selector:
    matchLabels: {app: api}
    matchExpressions:
      - {key: tier, operator: In, values: [back, middle]}
      - {key: canary, operator: DoesNotExist}
      - key: zone
        operator: NotIn
        values: [x]
      - {key: app, operator: Exists}
  template:
    metadata: {labels: {app: api, tier: back}}
    spec:
      containers: [{name: api, ports: [{containerPort: 9000}]}]
)");
  ASSERT_EQ(f.deployments.size(), 1u);
  const Deployment& d = f.deployments[0];
  EXPECT_EQ(d.meta.namespace_, "prod");
  EXPECT_EQ(d.replicas, 0);
  ASSERT_EQ(d.selector.match_expressions.size(), 4u);
  EXPECT_EQ(d.selector.match_expressions[0],
            (LabelSelectorRequirement{
                .key = "tier", .op = SelectorOperator::in, .values = {"back", "middle"}}));
  EXPECT_EQ(d.selector.match_expressions[1].op, SelectorOperator::does_not_exist);
  EXPECT_EQ(d.selector.match_expressions[2].op, SelectorOperator::not_in);
  EXPECT_EQ(d.selector.match_expressions[3].op, SelectorOperator::exists);
  EXPECT_EQ(d.selector.to_string(), "app=api,app,!canary,tier in (back,middle),zone notin (x)");
  EXPECT_EQ(d.template_.spec.containers[0].ports[0].protocol, Protocol::tcp);
}

TEST(K8sClusterFileGood, ListKindAndOtherKindsWarnedOncePerKind) {
  const ClusterFile f = parse(R"(apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: a}
    spec: {containers: [{name: c}]}
  - apiVersion: v1
    kind: Service
    metadata: {name: s}
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: d}
    spec:
      selector: {matchLabels: {app: d}}
      template:
        metadata: {labels: {app: d}}
        spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: t}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: m}
)");
  ASSERT_EQ(f.pods.size(), 1u);
  ASSERT_EQ(f.deployments.size(), 1u);
  EXPECT_EQ(f.deployments[0].replicas, 1);
  EXPECT_EQ(f.pod_sources[0].position.line, 5);
  ASSERT_EQ(f.warnings.size(), 2u);
  EXPECT_EQ(f.warnings[0].message, "kind Service is not emulated yet; ignored");
  EXPECT_EQ(f.warnings[0].count, 2);
  EXPECT_EQ(f.warnings[0].line, 9);
  EXPECT_EQ(
      f.warnings[0].to_string(),
      "test.yaml:9:5: warning: kind Service is not emulated yet; ignored (and 1 more like it)");
  EXPECT_EQ(f.warnings[1].message, "kind ConfigMap is not emulated yet; ignored");
}

TEST(K8sClusterFileGood, SameNameInTwoNamespacesAndPodBesideDeployment) {
  const ClusterFile f = parse(R"(apiVersion: v1
kind: Pod
metadata: {name: a}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: other}
spec: {containers: [{name: c}]}
)");
  EXPECT_EQ(f.pods.size(), 2u);
}

TEST(K8sClusterFileGood, PortsOfOnePodMayShareANumberAcrossProtocolsAndHostPortIsWarned) {
  const ClusterFile f = parse(R"(apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  hostNetwork: false
  containers:
    - name: c
      ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53, hostPort: 53}]
)");
  ASSERT_EQ(f.warnings.size(), 1u);
  EXPECT_EQ(f.warnings[0].field, "spec.containers[0].ports[1].hostPort");
  EXPECT_EQ(f.warnings[0].message, "hostPort is not emulated yet; ignored");
}

TEST(K8sClusterFileLoad, ReadsAFileAndNamesItInMessages) {
  const auto dir = std::filesystem::path(::testing::TempDir()) /
                   ("flatnet-k8s-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "c.yaml";
  {
    std::ofstream out(path);
    out << "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, "
           "ports: [{containerPort: 0}]}]}\n";
  }
  try {
    load_cluster_file(path);
    ADD_FAILURE() << "accepted port 0";
  } catch (const ClusterFileError& e) {
    EXPECT_EQ(e.file(), path.string());
    EXPECT_THAT(e.what(), HasSubstr(path.string() + ":4:"));
  }
  {
    std::ofstream out(path);
    out << kTwoNode;
  }
  EXPECT_EQ(load_cluster_file(path).pods.size(), 2u);
  try {
    load_cluster_file(dir);
    ADD_FAILURE() << "read a directory";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EISDIR);
  }
  std::filesystem::remove_all(dir);
  try {
    load_cluster_file(path);
    ADD_FAILURE() << "read a missing file";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT);
    EXPECT_THAT(e.what(), HasSubstr("read cluster file \"" + path.string() + "\""));
    EXPECT_THAT(e.what(), HasSubstr("No such file or directory"));
  }
}

// --- bad files ---

struct BadCase {
  std::string name;
  std::string yaml;   // the line of the error holds the marker "#!"
  std::string field;  // ClusterFileError::field()
  std::string text;   // a fragment of what()
  friend void PrintTo(const BadCase& c, std::ostream* out) { *out << c.name; }
};

class K8sClusterFileBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(K8sClusterFileBad, NamesTheLineTheFieldAndTheValue) {
  const BadCase& c = GetParam();
  const int line = marked_line(c.yaml);
  ASSERT_GT(line, 0) << "the case has no #! marker";
  try {
    const ClusterFile f = parse(c.yaml);
    // Checks against the cluster run only when the caller asks.
    validate_against(f, f.cluster.value_or(default_cluster()));
    ADD_FAILURE() << "accepted:\n" << c.yaml;
  } catch (const ClusterFileError& e) {
    EXPECT_THAT(e.what(), HasSubstr("test.yaml:" + std::to_string(line) + ":"));
    EXPECT_EQ(e.line(), line) << e.what();
    EXPECT_EQ(e.field(), c.field) << e.what();
    if (!c.field.empty()) {
      EXPECT_THAT(e.what(), HasSubstr(": " + c.field + ": "));
    }
    EXPECT_THAT(e.what(), HasSubstr(c.text));
    EXPECT_EQ(e.file(), "test.yaml");
  }
}

// A pod whose spec is `spec` (indented by two spaces, starting on line 4).
std::string pod_with(const std::string& spec) {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n" + spec;
}
// A cluster document with extra fields (starting on line 4).
std::string cluster_with(const std::string& fields) {
  return "apiVersion: flatnet/v1alpha1\nkind: Cluster\nname: c\n" + fields;
}
// A deployment whose spec is `spec` (starting on line 4).
std::string deployment_with(const std::string& spec) {
  return "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n" + spec;
}
const std::string kTemplate =
    "  template:\n    metadata: {labels: {app: d}}\n"
    "    spec: {containers: [{name: c}]}\n";

INSTANTIATE_TEST_SUITE_P(
    K8s, K8sClusterFileBad,
    ::testing::Values(
        // documents, kinds and versions
        BadCase{"yaml_syntax", "a: 1\nb: c: d #!\n", "", "invalid YAML: illegal map value"},
        BadCase{"document_is_a_list", "- a #!\n- b\n", "", "expected an object with apiVersion"},
        BadCase{"missing_kind", "apiVersion: v1 #!\nmetadata: {name: a}\n", "kind", "missing"},
        BadCase{"kind_in_lower_case", "apiVersion: v1\nkind: pod #!\n", "kind",
                "\"pod\" is not a kind; did you mean \"Pod\"?"},
        BadCase{"missing_api_version", "kind: Pod #!\nmetadata: {name: a}\n", "apiVersion",
                "missing (Pod is apiVersion v1)"},
        BadCase{"wrong_api_version", "apiVersion: apps/v1beta1 #!\nkind: Deployment\n",
                "apiVersion", "\"apps/v1beta1\" is not the apiVersion of Deployment; use apps/v1"},
        BadCase{"duplicate_key", "apiVersion: v1\nkind: Pod\nkind: Pod #!\n", "kind",
                "field given twice (first on line 2)"},
        BadCase{"merge_key", "apiVersion: v1\nkind: Pod\nmetadata:\n  <<: {name: a} #!\n",
                "metadata", "YAML merge keys (<<) are not supported"},
        // metadata
        BadCase{"missing_name", "apiVersion: v1\nkind: Pod\nmetadata: #!\n  labels: {a: b}\n",
                "metadata.name", "Pod: metadata.name: missing"},
        BadCase{"generate_name", "apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: x- #!\n",
                "metadata.name", "generateName is not supported"},
        BadCase{"name_not_dns", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Web_1 #!\n",
                "metadata.name", "\"Web_1\" is not a valid RFC 1123 subdomain"},
        BadCase{"namespace_not_dns",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: a.b #!\n",
                "metadata.namespace", "\"a.b\" is not a valid RFC 1123 label"},
        BadCase{
            "label_value_with_space",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    app: web server #!\n",
            "metadata.labels[app]", "\"web server\" is not a valid label value"},
        BadCase{"label_key_invalid",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    -app: web #!\n",
                "metadata.labels", "\"-app\" is not a valid label key"},
        BadCase{"label_value_is_a_number",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    version: 1 #!\n",
                "metadata.labels[version]", "1 is a number, not a string; quote it (\"1\")"},
        BadCase{"label_value_is_a_boolean",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels: {x: yes} #!\n",
                "metadata.labels[x]", "yes is a boolean"},
        BadCase{"duplicate_pod",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n"
                "---\napiVersion: v1 #!\nkind: Pod\nmetadata: {name: a}\n",
                "metadata.name",
                "metadata.name: \"a\" is defined twice in namespace \"default\": on line 1 and on "
                "line 6"},
        BadCase{"duplicate_deployment",
                deployment_with("  selector: {matchLabels: {app: d}}\n" + kTemplate) +
                    "---\napiVersion: apps/v1 #!\nkind: Deployment\nmetadata: {name: d}\n",
                "metadata.name",
                "Deployment \"d\": metadata.name: \"d\" is defined twice in namespace \"default\""},
        // pod spec
        BadCase{"missing_containers",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: #!\n  nodeName: node-1\n",
                "spec.containers", "missing"},
        BadCase{"no_containers", pod_with("  containers: [] #!\n"), "spec.containers",
                "a pod needs at least one container"},
        BadCase{"containers_is_a_map", pod_with("  containers: #!\n    name: c\n"),
                "spec.containers", "expected a list, found a map"},
        BadCase{"duplicate_container", pod_with("  containers:\n  - name: c\n  - name: c #!\n"),
                "spec.containers[1].name", "two containers are named \"c\""},
        BadCase{"missing_container_port",
                pod_with("  containers:\n  - name: c\n    ports:\n"
                         "    - protocol: TCP #!\n"),
                "spec.containers[0].ports[0].containerPort", "missing"},
        BadCase{"port_out_of_range",
                pod_with("  containers:\n  - name: c\n    ports:\n"
                         "    - containerPort: 70000 #!\n"),
                "spec.containers[0].ports[0].containerPort",
                "70000 is not a port number (1-65535)"},
        BadCase{"port_zero",
                pod_with("  containers: [{name: c, ports: [{containerPort: 0}]}] #!\n"),
                "spec.containers[0].ports[0].containerPort", "0 is not a port number"},
        BadCase{"port_not_an_integer",
                pod_with("  containers:\n  - name: c\n    ports:\n"
                         "    - containerPort: http #!\n"),
                "spec.containers[0].ports[0].containerPort",
                "http is not an integer; expected a port number (1-65535)"},
        BadCase{"port_quoted",
                pod_with("  containers:\n  - name: c\n    ports:\n"
                         "    - containerPort: \"80\" #!\n"),
                "spec.containers[0].ports[0].containerPort",
                "\"80\" is a string; write the number without quotes"},
        BadCase{"protocol_sctp",
                pod_with("  containers:\n  - name: c\n    ports:\n"
                         "    - containerPort: 80\n      protocol: SCTP #!\n"),
                "spec.containers[0].ports[0].protocol", "SCTP is not supported"},
        BadCase{"protocol_lower_case",
                pod_with("  containers:\n  - name: c\n    ports:\n"
                         "    - containerPort: 80\n      protocol: tcp #!\n"),
                "spec.containers[0].ports[0].protocol",
                "\"tcp\" is not a protocol; accepted: TCP, UDP"},
        BadCase{"duplicate_port",
                pod_with("  containers:\n  - name: a\n    ports:\n"
                         "    - containerPort: 80\n  - name: b\n    ports:\n"
                         "    - containerPort: 80 #!\n"),
                "spec.containers[1].ports[0].containerPort",
                "80/TCP is declared twice in the pod (the first at "
                "spec.containers[0].ports[0].containerPort on line 8)"},
        BadCase{"duplicate_port_name",
                pod_with("  containers:\n  - name: a\n    ports:\n"
                         "    - {containerPort: 80, name: web}\n"
                         "    - {containerPort: 81, name: web} #!\n"),
                "spec.containers[0].ports[1].name", "two ports of the pod are named \"web\""},
        BadCase{"port_name_too_long",
                pod_with("  containers:\n  - name: a\n    ports:\n"
                         "    - {containerPort: 80, name: a-very-long-port-name} #!\n"),
                "spec.containers[0].ports[0].name", "longer than 15 characters"},
        BadCase{"host_network", pod_with("  hostNetwork: true #!\n  containers: [{name: c}]\n"),
                "spec.hostNetwork", "not emulated"},
        BadCase{"misspelled_node_selector",
                pod_with("  nodeselector: {a: b} #!\n  containers: [{name: c}]\n"),
                "spec.nodeselector",
                "unknown field \"nodeselector\"; did you mean \"nodeSelector\"?"},
        BadCase{"misspelled_required_field",
                pod_with("  containers:\n  - name: c\n    ports:\n    - containerport: 80 #!\n"),
                "spec.containers[0].ports[0].containerport", "did you mean \"containerPort\"?"},
        BadCase{"node_name_not_dns", pod_with("  nodeName: Node_1 #!\n  containers: [{name: c}]\n"),
                "spec.nodeName", "\"Node_1\" is not a valid RFC 1123 subdomain"},
        // deployments
        BadCase{
            "replicas_negative",
            deployment_with("  replicas: -1 #!\n  selector: {matchLabels: {app: d}}\n" + kTemplate),
            "spec.replicas", "-1 is negative; replicas must be 0 or more"},
        BadCase{"replicas_not_an_integer",
                deployment_with("  replicas: 1.5 #!\n  selector: {matchLabels: {app: d}}\n" +
                                kTemplate),
                "spec.replicas", "1.5 is not an integer"},
        BadCase{"missing_selector",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: #!\n  replicas: "
                "1\n" +
                    kTemplate,
                "spec.selector", "missing (apps/v1 Deployments need a selector)"},
        BadCase{"empty_selector", deployment_with("  selector: {} #!\n" + kTemplate),
                "spec.selector", "empty selector"},
        BadCase{"selector_does_not_match",
                deployment_with("  selector: #!\n    matchLabels: {app: web}\n" + kTemplate),
                "spec.selector",
                "selector app=web does not match the template's labels (app=d); the API server "
                "refuses such a Deployment"},
        BadCase{"bad_operator",
                deployment_with("  selector:\n    matchExpressions:\n"
                                "    - {key: app, operator: Like, values: [d]} #!\n" +
                                kTemplate),
                "spec.selector.matchExpressions[0].operator",
                "\"Like\" is not an operator; accepted: In, NotIn, Exists, DoesNotExist"},
        BadCase{"in_without_values",
                deployment_with("  selector:\n    matchExpressions:\n"
                                "    - {key: app, operator: In} #!\n" +
                                kTemplate),
                "spec.selector.matchExpressions[0].values", "operator In needs at least one value"},
        BadCase{"exists_with_values",
                deployment_with("  selector:\n    matchExpressions:\n"
                                "    - {key: app, operator: Exists, values: [d]} #!\n" +
                                kTemplate),
                "spec.selector.matchExpressions[0].values", "operator Exists takes no values"},
        BadCase{"template_port_out_of_range",
                deployment_with("  selector: {matchLabels: {app: d}}\n  template:\n"
                                "    metadata: {labels: {app: d}}\n    spec:\n      containers:\n"
                                "        - name: c\n          ports:\n"
                                "            - containerPort: 80\n"
                                "            - containerPort: 70000 #!\n"),
                "spec.template.spec.containers[0].ports[1].containerPort",
                "test.yaml:13:30: Deployment \"d\": "
                "spec.template.spec.containers[0].ports[1].containerPort: 70000 is not a port "
                "number (1-65535)"},
        BadCase{"error_inside_a_list",
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n"
                "  metadata: {name: a}\n  spec: {containers: [{name: C}]} #!\n",
                "spec.containers[0].name", "Pod \"a\": spec.containers[0].name: \"C\""},
        // the cluster
        BadCase{"cluster_missing_name", "apiVersion: flatnet/v1alpha1 #!\nkind: Cluster\n",
                "metadata.name", "missing: name the cluster"},
        BadCase{"cluster_named_twice",
                "apiVersion: flatnet/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nname: b #!\n",
                "name", "the cluster is named twice"},
        BadCase{"cluster_name_too_long",
                "apiVersion: flatnet/v1alpha1\nkind: Cluster\nname: "
                "abcdefghijabcdefghijabcdefghijabc #!\n",
                "name", "is longer than 32 characters"},
        BadCase{"cluster_name_not_dns",
                "apiVersion: flatnet/v1alpha1\nkind: Cluster\nmetadata: {name: My.Cluster} #!\n",
                "metadata.name", "\"My.Cluster\" is not a valid RFC 1123 label"},
        BadCase{"two_clusters",
                cluster_with("---\napiVersion: flatnet/v1alpha1 #!\nkind: Cluster\n"), "",
                "a second Cluster document; a file holds at most one (the first is on line 1)"},
        BadCase{
            "cluster_unknown_field", cluster_with("size: 3 #!\n"), "size",
            "unknown field \"size\"; accepted: apiVersion, kind, metadata, name, nodes, podCIDR"},
        BadCase{"cluster_misspelled_field", cluster_with("podCidr: 10.0.0.0/16 #!\n"), "podCidr",
                "did you mean \"podCIDR\"?"},
        BadCase{"nodes_zero", cluster_with("nodes: 0 #!\n"), "nodes",
                "0 is not a node count (1-254)"},
        BadCase{"nodes_too_many", cluster_with("nodes: 255 #!\n"), "nodes",
                "255 is not a node count (1-254)"},
        BadCase{"nodes_a_map", cluster_with("nodes: {a: 1} #!\n"), "nodes",
                "expected a node count or a list of nodes, found a map"},
        BadCase{"nodes_empty_list", cluster_with("nodes: [] #!\n"), "nodes",
                "a cluster needs at least one node"},
        BadCase{"duplicate_node", cluster_with("nodes:\n- a\n- name: a #!\n"), "nodes[1].name",
                "node \"a\" is listed twice: on line 5 and on line 6"},
        BadCase{"node_name_not_a_label", cluster_with("nodes: [node_1] #!\n"), "nodes[0]",
                "\"node_1\" is not a valid RFC 1123 label"},
        BadCase{"pod_cidr_malformed", cluster_with("podCIDR: 10.244.0.0/33 #!\n"), "podCIDR",
                "invalid CIDR \"10.244.0.0/33\""},
        BadCase{"pod_cidr_host_bits", cluster_with("podCIDR: 10.244.0.1/16 #!\n"), "podCIDR",
                "did you mean 10.244.0.0/16?"},
        BadCase{"pod_cidr_ipv6", cluster_with("podCIDR: fd00::/48 #!\n"), "podCIDR",
                "fd00::/48 is an IPv6 prefix; only IPv4 is supported for now"},
        BadCase{"service_cidr_not_a_string", cluster_with("serviceCIDR: [10.96.0.0/16] #!\n"),
                "serviceCIDR", "expected a string, found a list"},
        BadCase{"mask_not_longer", cluster_with("podCIDR: 10.0.0.0/16\npodCIDRMaskSize: 16 #!\n"),
                "podCIDRMaskSize", "16 is not longer than podCIDR's prefix length (/16)"},
        BadCase{"mask_too_long", cluster_with("podCIDRMaskSize: 31 #!\n"), "podCIDRMaskSize",
                "31 is larger than 30"},
        BadCase{"default_mask_leaves_no_room", cluster_with("podCIDR: 10.0.0.0/24 #!\n"), "podCIDR",
                "10.0.0.0/24 leaves no room for /24 node subnets"},
        BadCase{"too_many_nodes_for_pod_cidr",
                cluster_with("nodes: 3\npodCIDR: 10.244.0.0/23 #!\n"), "podCIDR",
                "podCIDR 10.244.0.0/23 split into /24 subnets has room for 1 node (subnet 0 is "
                "left unused), but the cluster has 3"},
        BadCase{"node_cidr_too_small", cluster_with("nodes: 2\nnodeCIDR: 172.18.0.0/30 #!\n"),
                "nodeCIDR", "nodeCIDR 172.18.0.0/30 has room for 1 node (the first"},
        BadCase{"node_cidr_too_small_by_default", cluster_with("nodes: 254 #!\n"), "nodes",
                "nodeCIDR 172.18.0.0/24 (the default) has room for 253 nodes"},
        BadCase{"overlapping_cidrs",
                cluster_with("podCIDR: 10.96.0.0/16\nserviceCIDR: 10.96.0.0/12 #!\n"),
                "serviceCIDR", "10.96.0.0/12 overlaps podCIDR 10.96.0.0/16"},
        BadCase{"overlaps_a_default", cluster_with("nodeCIDR: 10.244.7.0/24 #!\n"), "nodeCIDR",
                "10.244.7.0/24 overlaps podCIDR 10.244.0.0/16 (the default)"},
        BadCase{"bad_network", cluster_with("network: mesh #!\n"), "network",
                "\"mesh\" is not a network mode; accepted: routed, flat"},
        BadCase{"bad_cni", cluster_with("cni: calico #!\n"), "cni",
                "\"calico\" is not a CNI plugin; accepted: flatnet, bridge"},
        BadCase{"mtu_too_small", cluster_with("mtu: 100 #!\n"), "mtu",
                "100 is not an MTU flatnet accepts (576-9216)"},
        // against the cluster
        BadCase{"unknown_node_name",
                cluster_with("nodes: 2\n---\n") + pod_with("  nodeName: node-3 #!\n"
                                                           "  containers: [{name: c}]\n"),
                "spec.nodeName",
                "node \"node-3\" does not exist in cluster \"c\" (its nodes: node-1, node-2)"},
        BadCase{"node_selector_matches_no_node",
                pod_with("  nodeSelector: {disk: ssd} #!\n  containers: [{name: c}]\n"),
                "spec.nodeSelector",
                "no node of cluster \"flatnet\" has the labels disk=ssd; the pod could never be "
                "scheduled"},
        BadCase{"named_node_lacks_selected_labels",
                deployment_with("  selector: {matchLabels: {app: d}}\n  template:\n"
                                "    metadata: {labels: {app: d}}\n    spec:\n"
                                "      nodeName: node-1\n"
                                "      nodeSelector: {kubernetes.io/hostname: node-2} #!\n"
                                "      containers: [{name: c}]\n"),
                "spec.template.spec.nodeSelector",
                "node \"node-1\" (spec.template.spec.nodeName) does not have the labels "
                "kubernetes.io/hostname=node-2"}),
    [](const auto& info) { return info.param.name; });

// --- selectors ---

struct SelectorCase {
  std::string name;
  LabelSelector selector;
  Labels labels;
  bool matches;
  friend void PrintTo(const SelectorCase& c, std::ostream* out) { *out << c.name; }
};

LabelSelectorRequirement req(std::string key, SelectorOperator op,
                             std::vector<std::string> values = {}) {
  return {.key = std::move(key), .op = op, .values = std::move(values)};
}

class K8sSelector : public ::testing::TestWithParam<SelectorCase> {};

TEST_P(K8sSelector, HasKubernetesSemantics) {
  const auto& c = GetParam();
  EXPECT_EQ(c.selector.matches(c.labels), c.matches)
      << c.selector.to_string() << " vs " << labels_to_string(c.labels);
}

const LabelSelector kAppWeb{.match_labels = {{"app", "web"}}, .match_expressions = {}};
LabelSelector expr(LabelSelectorRequirement r) {
  return {.match_labels = {}, .match_expressions = {std::move(r)}};
}

INSTANTIATE_TEST_SUITE_P(
    K8s, K8sSelector,
    ::testing::Values(
        SelectorCase{"empty_matches_nothing_set", {}, {}, true},
        SelectorCase{"empty_matches_anything", {}, {{"a", "b"}}, true},
        SelectorCase{"equal", kAppWeb, {{"app", "web"}}, true},
        SelectorCase{"equal_with_more_labels", kAppWeb, {{"app", "web"}, {"x", "y"}}, true},
        SelectorCase{"equal_other_value", kAppWeb, {{"app", "api"}}, false},
        SelectorCase{"equal_missing", kAppWeb, {}, false},
        SelectorCase{
            "in_listed", expr(req("t", SelectorOperator::in, {"a", "b"})), {{"t", "b"}}, true},
        SelectorCase{
            "in_not_listed", expr(req("t", SelectorOperator::in, {"a"})), {{"t", "c"}}, false},
        SelectorCase{"in_missing", expr(req("t", SelectorOperator::in, {"a"})), {}, false},
        SelectorCase{"not_in_missing", expr(req("t", SelectorOperator::not_in, {"a"})), {}, true},
        SelectorCase{
            "not_in_other", expr(req("t", SelectorOperator::not_in, {"a"})), {{"t", "b"}}, true},
        SelectorCase{
            "not_in_listed", expr(req("t", SelectorOperator::not_in, {"a"})), {{"t", "a"}}, false},
        SelectorCase{
            "exists_empty_value", expr(req("t", SelectorOperator::exists)), {{"t", ""}}, true},
        SelectorCase{"exists_missing", expr(req("t", SelectorOperator::exists)), {}, false},
        SelectorCase{"does_not_exist_missing",
                     expr(req("t", SelectorOperator::does_not_exist)),
                     {{"x", "t"}},
                     true},
        SelectorCase{"does_not_exist_present",
                     expr(req("t", SelectorOperator::does_not_exist)),
                     {{"t", "x"}},
                     false},
        SelectorCase{"all_must_hold",
                     {.match_labels = {{"app", "web"}},
                      .match_expressions = {req("t", SelectorOperator::in, {"a"}),
                                            req("c", SelectorOperator::does_not_exist)}},
                     {{"app", "web"}, {"t", "a"}, {"c", "1"}},
                     false},
        SelectorCase{"all_hold",
                     {.match_labels = {{"app", "web"}},
                      .match_expressions = {req("t", SelectorOperator::in, {"a"}),
                                            req("c", SelectorOperator::does_not_exist)}},
                     {{"app", "web"}, {"t", "a"}},
                     true}),
    [](const auto& info) { return info.param.name; });

TEST(K8sSelectorText, PrintsLikeKubectl) {
  EXPECT_EQ(LabelSelector{}.to_string(), "");
  EXPECT_TRUE(LabelSelector{}.empty());
  const LabelSelector s{.match_labels = {{"app", "web"}},
                        .match_expressions = {req("zone", SelectorOperator::not_in, {"x"}),
                                              req("tier", SelectorOperator::in, {"b", "a", "b"}),
                                              req("canary", SelectorOperator::does_not_exist),
                                              req("env", SelectorOperator::exists)}};
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(s.to_string(), "app=web,!canary,env,tier in (a,b),zone notin (x)");
  EXPECT_EQ(labels_to_string({{"b", "2"}, {"a", "1"}}), "a=1,b=2");
}

TEST(K8sEnums, PrintAndParse) {
  EXPECT_EQ(to_string(Protocol::tcp), "TCP");
  EXPECT_EQ(to_string(Protocol::udp), "UDP");
  EXPECT_EQ(parse_protocol("UDP"), Protocol::udp);
  EXPECT_EQ(parse_protocol("udp"), std::nullopt);
  EXPECT_EQ(parse_protocol("SCTP"), std::nullopt);
  EXPECT_EQ(to_string(Network::flat), "flat");
  EXPECT_EQ(parse_network("routed"), Network::routed);
  EXPECT_EQ(parse_network("Routed"), std::nullopt);
  EXPECT_EQ(to_string(CniKind::bridge), "bridge");
  EXPECT_EQ(parse_cni_kind("flatnet"), CniKind::flatnet);
  EXPECT_EQ(parse_cni_kind("calico"), std::nullopt);
  for (const auto op : {SelectorOperator::in, SelectorOperator::not_in, SelectorOperator::exists,
                        SelectorOperator::does_not_exist}) {
    EXPECT_EQ(parse_selector_operator(to_string(op)), op);
  }
  EXPECT_EQ(parse_selector_operator("in"), std::nullopt);
}

// --- names ---

enum class NameRule { label, subdomain, label_key, label_value, port_name };

struct NameCase {
  NameRule rule;
  std::string value;
  std::string problem;  // "" when valid, else a fragment of the message
  friend void PrintTo(const NameCase& c, std::ostream* out) {
    *out << static_cast<int>(c.rule) << " \"" << c.value.substr(0, 40) << "\"";
  }
};

class K8sNames : public ::testing::TestWithParam<NameCase> {};

TEST_P(K8sNames, FollowKubernetesRules) {
  const auto& c = GetParam();
  std::string problem;
  bool valid = false;
  switch (c.rule) {
    case NameRule::label:
      problem = dns1123_label_problem(c.value);
      valid = is_dns1123_label(c.value);
      break;
    case NameRule::subdomain:
      problem = dns1123_subdomain_problem(c.value);
      valid = is_dns1123_subdomain(c.value);
      break;
    case NameRule::label_key:
      problem = label_key_problem(c.value);
      valid = is_label_key(c.value);
      break;
    case NameRule::label_value:
      problem = label_value_problem(c.value);
      valid = is_label_value(c.value);
      break;
    case NameRule::port_name:
      problem = port_name_problem(c.value);
      valid = problem.empty();
      break;
  }
  if (c.problem.empty()) {
    EXPECT_EQ(problem, "");
    EXPECT_TRUE(valid);
  } else {
    EXPECT_THAT(problem, HasSubstr(c.problem));
    EXPECT_THAT(problem, HasSubstr(quote(c.value).substr(0, 20)));
    EXPECT_FALSE(valid);
  }
}

INSTANTIATE_TEST_SUITE_P(
    K8s, K8sNames,
    ::testing::Values(
        NameCase{NameRule::label, "node-1", ""}, NameCase{NameRule::label, "a", ""},
        NameCase{NameRule::label, "0abc9", ""}, NameCase{NameRule::label, std::string(63, 'a'), ""},
        NameCase{NameRule::label, std::string(64, 'a'), "longer than 63"},
        NameCase{NameRule::label, "", "empty"},
        NameCase{NameRule::label, "Node", "\"N\" is not allowed"},
        NameCase{NameRule::label, "a.b", "\".\" is not allowed"},
        NameCase{NameRule::label, "-a", "start and end"},
        NameCase{NameRule::label, "a-", "start and end"},
        NameCase{NameRule::label, "a\nb", "\"\\x0a\" is not allowed"},
        NameCase{NameRule::subdomain, "web", ""}, NameCase{NameRule::subdomain, "web.prod-1.x", ""},
        NameCase{NameRule::subdomain, std::string(253, 'a'), ""},
        NameCase{NameRule::subdomain, std::string(254, 'a'), "longer than 253"},
        NameCase{NameRule::subdomain, "a..b", "empty part"},
        NameCase{NameRule::subdomain, ".a", "empty part"},
        NameCase{NameRule::subdomain, "a.-b", "start and end"},
        NameCase{NameRule::subdomain, "Web", "\"W\" is not allowed"},
        NameCase{NameRule::subdomain, "a_b", "\"_\" is not allowed"},
        NameCase{NameRule::label_key, "app", ""}, NameCase{NameRule::label_key, "App_1.x-y", ""},
        NameCase{NameRule::label_key, "app.kubernetes.io/name", ""},
        NameCase{NameRule::label_key, "", "empty"},
        NameCase{NameRule::label_key, "/name", "prefix before '/' is empty"},
        NameCase{NameRule::label_key, "example.com/", "name after '/' is empty"},
        NameCase{NameRule::label_key, "Example.com/name", "prefix is not a DNS subdomain"},
        NameCase{NameRule::label_key, "a/b/c", "\"/\" is not allowed"},
        NameCase{NameRule::label_key, "_a", "start and end"},
        NameCase{NameRule::label_key, std::string(64, 'k'), "longer than 63"},
        NameCase{NameRule::label_value, "", ""}, NameCase{NameRule::label_value, "v1.2_x-Y", ""},
        NameCase{NameRule::label_value, "a b", "\" \" is not allowed"},
        NameCase{NameRule::label_value, "a-", "start and end"},
        NameCase{NameRule::label_value, std::string(64, 'v'), "longer than 63"},
        NameCase{NameRule::port_name, "http", ""}, NameCase{NameRule::port_name, "dns-tcp", ""},
        NameCase{NameRule::port_name, "h2c", ""},
        NameCase{NameRule::port_name, "8080", "at least one letter"},
        NameCase{NameRule::port_name, "web--a", "\"--\""},
        NameCase{NameRule::port_name, "-web", "start and end"},
        NameCase{NameRule::port_name, "Web", "\"W\" is not allowed"},
        NameCase{NameRule::port_name, "abcdefghijklmnop", "longer than 15"}));

// --- the pod-template-hash ---

PodTemplate sample_template() {
  PodTemplate t;
  t.meta.labels = {{"app", "web"}};
  t.spec.containers = {
      {.name = "web",
       .ports = {{.name = "http", .container_port = 8080, .protocol = Protocol::tcp}}}};
  return t;
}

TEST(K8sPodTemplateHash, IsStableAcrossRunsAndPlatforms) {
  const std::string hash = pod_template_hash(sample_template());
  // A fixed value: FNV-1a 64 over the canonical encoding does not depend on the platform.
  EXPECT_EQ(hash, "wd6psjvdbt");
  EXPECT_EQ(hash.size(), 10u);
  for (const char c : hash) {
    EXPECT_NE(std::string_view("bcdfghjklmnpqrstvwxz2456789").find(c), std::string_view::npos);
  }
  EXPECT_EQ(pod_template_hash(sample_template()), hash);
}

TEST(K8sPodTemplateHash, ChangesWithEveryFieldThatShapesThePods) {
  const std::string base = pod_template_hash(sample_template());
  std::vector<PodTemplate> edits(8, sample_template());
  edits[0].spec.containers[0].ports[0].container_port = 8081;
  edits[1].spec.containers[0].ports[0].protocol = Protocol::udp;
  edits[2].spec.containers[0].ports.push_back({.name = "", .container_port = 9090});
  edits[3].spec.containers[0].ports[0].name = "web";
  edits[4].meta.labels["tier"] = "front";
  edits[5].spec.node_selector["disk"] = "ssd";
  edits[6].spec.node_name = "node-1";
  edits[7].meta.annotations["restartedAt"] = "now";
  std::set<std::string> seen{base};
  for (const auto& t : edits)
    EXPECT_TRUE(seen.insert(pod_template_hash(t)).second);
  // Fields that say where the template is, not what it is, do not count.
  PodTemplate moved = sample_template();
  moved.meta.name = "other";
  EXPECT_EQ(pod_template_hash(moved), base);
}

// --- the cluster's addressing convention ---

TEST(K8sClusterSpec, PlacesNodesByTheConvention) {
  const ClusterSpec c = default_cluster();
  EXPECT_EQ(c.node_pod_cidr(0).to_string(), "10.244.1.0/24");
  EXPECT_EQ(c.node_pod_cidr(1).to_string(), "10.244.2.0/24");
  EXPECT_EQ(c.node_address(0).to_string(), "172.18.0.2");
  EXPECT_EQ(c.node_address(252).to_string(), "172.18.0.254");
  EXPECT_THROW(c.node_address(253), std::out_of_range);
  EXPECT_EQ(c.pod_cidr_node_capacity(), 255u);
  EXPECT_EQ(c.node_cidr_node_capacity(), 253u);
  EXPECT_EQ(c.find_node("node-2"), &c.nodes[1]);
  EXPECT_EQ(c.find_node("node-3"), nullptr);
  EXPECT_EQ(effective_node_labels({.name = "n", .labels = {{"a", "b"}}}),
            (Labels{{"a", "b"}, {"kubernetes.io/hostname", "n"}, {"kubernetes.io/os", "linux"}}));
}

// --- JSON ---

Pod sample_pod() {
  Pod p;
  p.meta = {.name = "web-0",
            .namespace_ = "prod",
            .labels = {{"app", "web"}},
            .annotations = {{"note", "a \"quoted\" value\nwith a newline"}}};
  p.spec.node_name = "node-1";
  p.spec.node_selector = {{"disk", "ssd"}};
  p.spec.containers = {
      {.name = "web",
       .ports = {{.name = "http", .container_port = 8080, .protocol = Protocol::tcp},
                 {.name = "", .container_port = 53, .protocol = Protocol::udp}}},
      {.name = "sidecar", .ports = {}}};
  return p;
}

Deployment sample_deployment() {
  Deployment d;
  d.meta = {.name = "web", .namespace_ = "default", .labels = {}, .annotations = {}};
  d.replicas = 4;
  d.selector = {.match_labels = {{"app", "web"}},
                .match_expressions = {req("tier", SelectorOperator::in, {"a", "b"}),
                                      req("canary", SelectorOperator::does_not_exist)}};
  d.template_ = sample_template();
  d.template_.meta.labels["tier"] = "a";
  d.template_.meta.annotations = {{"x", "y"}};
  d.template_.spec.node_selector = {{"disk", "ssd"}};
  return d;
}

ClusterSpec sample_cluster() {
  ClusterSpec c = default_cluster();
  c.name = "demo";
  c.nodes[0].labels = {{"zone", "a"}};
  c.pod_cidr = IpPrefix::parse("10.10.0.0/16");
  c.pod_subnet_prefix_length = 26;
  c.node_cidr = IpPrefix::parse("192.168.0.0/24");
  c.service_cidr = IpPrefix::parse("10.20.0.0/16");
  c.network = Network::flat;
  c.cni = CniKind::bridge;
  c.mtu = 1400;
  return c;
}

TEST(K8sJson, PodHasTheKubernetesShape) {
  Pod p;
  p.meta.name = "a";
  p.spec.containers = {{.name = "c", .ports = {{.name = "", .container_port = 80}}}};
  EXPECT_EQ(json(p), json::parse(R"({"apiVersion": "v1", "kind": "Pod",
      "metadata": {"name": "a", "namespace": "default"},
      "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}
  })"));
}

TEST(K8sJson, DeploymentHasTheKubernetesShape) {
  const json j = sample_deployment();
  EXPECT_EQ(j["apiVersion"], "apps/v1");
  EXPECT_EQ(j["kind"], "Deployment");
  EXPECT_EQ(j["spec"]["replicas"], 4);
  EXPECT_EQ(j["spec"]["selector"]["matchExpressions"][1],
            json::parse(R"({"key": "canary", "operator": "DoesNotExist"})"));
  EXPECT_EQ(j["spec"]["template"]["metadata"],
            json::parse(R"({"labels": {"app": "web", "tier": "a"}, "annotations": {"x": "y"}})"));
}

TEST(K8sJson, RoundTripsLosslessly) {
  const Pod pod = sample_pod();
  EXPECT_EQ(json(pod).get<Pod>(), pod);
  EXPECT_EQ(json::parse(json(pod).dump()).get<Pod>(), pod);
  const Deployment d = sample_deployment();
  EXPECT_EQ(json(d).get<Deployment>(), d);
  const ClusterSpec c = sample_cluster();
  EXPECT_EQ(json(c).get<ClusterSpec>(), c);
  EXPECT_EQ(json(default_cluster()).get<ClusterSpec>(), default_cluster());
  const LabelSelector s = d.selector;
  EXPECT_EQ(json(s).get<LabelSelector>(), s);
}

TEST(K8sJson, WhatTheEncodersWriteIsAClusterFile) {
  const std::string text = json(sample_cluster()).dump() + "\n---\n" +
                           json(sample_deployment()).dump(2) + "\n---\n" +
                           json(sample_pod()).dump();
  const ClusterFile f = parse(text);
  ASSERT_TRUE(f.cluster);
  EXPECT_EQ(*f.cluster, sample_cluster());
  ASSERT_EQ(f.deployments.size(), 1u);
  EXPECT_EQ(f.deployments[0], sample_deployment());
  ASSERT_EQ(f.pods.size(), 1u);
  EXPECT_EQ(f.pods[0], sample_pod());
  EXPECT_TRUE(f.warnings.empty());
}

TEST(K8sJson, DecodersAcceptWhatKubectlWritesAndFillDefaults) {
  const Pod p = json::parse(R"({"metadata": {"name": "a", "uid": "x"},
      "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]},
      "status": {"phase": "Running"}})")
                    .get<Pod>();
  EXPECT_EQ(p.meta.namespace_, "default");
  EXPECT_EQ(p.spec.containers[0].ports[0].protocol, Protocol::tcp);
  const ClusterSpec c =
      json::parse(R"({"kind": "Cluster", "name": "x", "nodes": 3})").get<ClusterSpec>();
  EXPECT_EQ(c.nodes.size(), 3u);
  EXPECT_EQ(c.mtu, 1500u);
}

struct DecodeCase {
  std::string name;
  std::string kind;  // Pod, Deployment or Cluster
  std::string json_text;
  std::string text;
  friend void PrintTo(const DecodeCase& c, std::ostream* out) { *out << c.name; }
};

class K8sJsonDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(K8sJsonDecode, RefusesTheWrongShapeNamingTheField) {
  const auto& c = GetParam();
  const json j = json::parse(c.json_text);
  try {
    if (c.kind == "Pod") (void)j.get<Pod>();
    if (c.kind == "Deployment") (void)j.get<Deployment>();
    if (c.kind == "Cluster") (void)j.get<ClusterSpec>();
    ADD_FAILURE() << "accepted " << c.json_text;
  } catch (const K8sDecodeError& e) {
    EXPECT_THAT(e.what(), HasSubstr(c.text));
  }
}

INSTANTIATE_TEST_SUITE_P(
    K8s, K8sJsonDecode,
    ::testing::Values(
        DecodeCase{"not_an_object", "Pod", "[]", "decode Pod: expected an object, found a list"},
        DecodeCase{"wrong_kind", "Pod", R"({"kind": "Service"})", "kind: \"Service\" is not Pod"},
        DecodeCase{"wrong_version", "Deployment", R"({"apiVersion": "v1"})",
                   "apiVersion: \"v1\" is not apps/v1"},
        DecodeCase{"port_a_string", "Pod",
                   R"({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c",
                       "ports": [{"containerPort": "x"}]}]}})",
                   "decode Pod \"a\": spec.containers[0].ports[0].containerPort: \"x\" is not an "
                   "integer"},
        DecodeCase{"port_out_of_range", "Pod",
                   R"({"spec": {"containers": [{"ports": [{"containerPort": 65536}]}]}})",
                   "65536 is out of range (1-65535)"},
        DecodeCase{"protocol", "Pod",
                   R"({"spec": {"containers": [{"ports": [{"containerPort": 1,
                       "protocol": "SCTP"}]}]}})",
                   "protocol: \"SCTP\" is not TCP or UDP"},
        DecodeCase{"label_not_a_string", "Pod", R"({"metadata": {"labels": {"a": 1}}})",
                   "metadata.labels[a]: expected a string, found a number"},
        DecodeCase{"replicas_negative", "Deployment", R"({"spec": {"replicas": -1}})",
                   "spec.replicas: -1 is out of range"},
        DecodeCase{"operator", "Deployment",
                   R"({"spec": {"selector": {"matchExpressions": [{"key": "a",
                       "operator": "in"}]}}})",
                   "spec.selector.matchExpressions[0].operator: \"in\" is not an operator"},
        DecodeCase{"cidr", "Cluster", R"({"podCIDR": "10.0.0.0/33"})",
                   "podCIDR: invalid CIDR \"10.0.0.0/33\""},
        DecodeCase{"ipv6", "Cluster", R"({"podCIDR": "fd00::/48"})", "is not IPv4"},
        DecodeCase{"network", "Cluster", R"({"network": "mesh"})",
                   "\"mesh\" is not a network; accepted: routed, flat"},
        DecodeCase{"nodes", "Cluster", R"({"nodes": {"a": 1}})", "nodes: expected a list"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace flatnet::netmodel
