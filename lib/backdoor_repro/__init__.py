"""backdoor_repro: the reproducible companion to DBD, Trap-and-Replace, FCT (D-ST/D-BR) and FMP.

Five lines from data to a backdoored model and its metrics::

    import backdoor_repro as br
    train, test = br.load_dataset("cifar10-smoke", "train"), br.load_dataset("cifar10-smoke", "test")
    attack = br.get_attack("badnets_dbd_2x2", rate=0.1)
    poisoned = attack.poison(train, data_seed=0)
    model = br.build_model("resnet18", 10, width=8)
    br.train_supervised(model, poisoned.images, poisoned.labels, br.TrainConfig(epochs=20, augmentation="flip"))
    print(br.AttackEvaluator(attack, test)(model))   # {'ACC': ..., 'ASR': ..., 'RA': ..., 'CTR': ...}
"""
from .attacks import ATTACKS, Attack, PoisonedSet, get_attack, register
from .data import DATASETS, DatasetUnavailable, ImageSet, class_balanced_subset, load_dataset
from .evaluation import AttackEvaluator
from .models import build_model
from .profiles import PROFILES, Profile, get_profile
from .train import TrainConfig, predict, resolve_device, train_supervised

__version__ = "0.1.0"

__all__ = ["ATTACKS", "Attack", "AttackEvaluator", "DATASETS", "DatasetUnavailable", "ImageSet", "PROFILES",
           "PoisonedSet", "Profile", "TrainConfig", "build_model", "class_balanced_subset", "get_attack",
           "get_profile", "load_dataset", "predict", "register", "resolve_device", "train_supervised"]
