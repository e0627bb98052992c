import copy, sys, torch, yaml
sys.path.insert(0, "model")
from lightsr.train import run_training
from lightsr.prune import save_pruned
cfg = yaml.safe_load(open("model/configs/light_x4_prune_lamp.yml"))
ck = torch.load("model/checkpoints/light_x4_pruned/pruned.pth", map_location="cpu", weights_only=False)
opt = copy.deepcopy(cfg); opt["name"] = "light_x4_pruned_lamp_finetune2"
opt["train"]["total_iter"] = 2500
opt["train"]["optim_g"]["lr"] = 1e-4
m = ck["module"].train().requires_grad_(True)
net = run_training(opt, net_g=m, out_dir="runs/light_x4_pruned_ft2").cpu().eval()
info = dict(ck.get("prune", {})); info["finetune_steps"] = info.get("finetune_steps", 0) + 2500
save_pruned(__import__("pathlib").Path("model/checkpoints/light_x4_pruned/pruned.pth"), net, ck["opt"], info)
print("saved")
