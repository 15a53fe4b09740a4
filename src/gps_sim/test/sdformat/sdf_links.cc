// Load a URDF or SDF file with libsdformat (the parser Gazebo uses; it converts URDF to SDFormat) and print
// every model's links and joints, one per line: "link <name>" / "joint <name> <type>". Exit 1 with the
// parser's errors if loading fails. Used by test_sdformat.py.
#include <iostream>
#include <sdf/sdf.hh>

int main(int argc, char **argv) {
  if (argc != 2) {
    std::cerr << "usage: sdf_links FILE\n";
    return 2;
  }
  sdf::Root root;
  sdf::Errors errors = root.Load(argv[1]);
  for (const auto &e : errors) std::cerr << "sdformat: " << e.Message() << "\n";
  if (!errors.empty() && root.Model() == nullptr && root.WorldCount() == 0) return 1;
  auto print = [](const sdf::Model *m) {
    for (uint64_t i = 0; i < m->LinkCount(); ++i) std::cout << "link " << m->LinkByIndex(i)->Name() << "\n";
    for (uint64_t i = 0; i < m->JointCount(); ++i)
      std::cout << "joint " << m->JointByIndex(i)->Name() << " " << static_cast<int>(m->JointByIndex(i)->Type()) << "\n";
    for (uint64_t i = 0; i < m->FrameCount(); ++i) std::cout << "frame " << m->FrameByIndex(i)->Name() << "\n";
  };
  if (root.Model() != nullptr) print(root.Model());
  for (uint64_t w = 0; w < root.WorldCount(); ++w) {
    const sdf::World *world = root.WorldByIndex(w);
    auto g = world->Gravity();
    std::cout << "world " << world->Name() << " gravity " << g.X() << " " << g.Y() << " " << g.Z() << "\n";
    for (uint64_t i = 0; i < world->ModelCount(); ++i) {
      std::cout << "model " << world->ModelByIndex(i)->Name() << "\n";
      print(world->ModelByIndex(i));
    }
    const sdf::ElementPtr el = world->Element();
    for (sdf::ElementPtr p = el->HasElement("plugin") ? el->GetElement("plugin") : nullptr; p;
         p = p->GetNextElement("plugin"))
      std::cout << "plugin " << p->Get<std::string>("filename") << " " << p->Get<std::string>("name") << "\n";
  }
  return errors.empty() ? 0 : 3;
}
