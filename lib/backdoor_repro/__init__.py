"""backdoor_repro: the reproducible companion to DBD, Trap-and-Replace, FCT (D-ST/D-BR) and FMP.

Five lines from data to a backdoored model and its metrics::

    import backdoor_repro as br
    train, test = br.load_dataset("cifar10-smoke", "train"), br.load_dataset("cifar10-smoke", "test")
    attack = br.get_attack("badnets_dbd_2x2", rate=0.1)
    poisoned = attack.poison(train, data_seed=0)
    model = br.build_model("resnet18", 10, width=8)
    br.train_model(model, poisoned.images, poisoned.labels, br.TrainConfig(epochs=20, augmentation="flip"))
    print(br.AttackEvaluator(attack, test)(model))   # {'ACC': ..., 'ASR': ..., 'RA': ..., 'CTR': ...}

A defense, through the registry (cached stages, the profile's config)::

    ex = br.setup("smoke", defenses=("dbd",))
    spec = ex.spec("badnets_dbd_2x2", defense="dbd")
    result = ex.run("dbd", spec)                     # DefenseResult: model, stages, suspicion
    print(ex.evaluate(result.model, spec), result.detection(ex.data(spec).train.poison_mask))
"""
from .attacks import ATTACKS, Attack, PoisonedSet, get_attack, register
from .data import DATASETS, DatasetUnavailable, ImageSet, class_balanced_subset, load_dataset
from .defenses import DEFENSES, Defense, DefenseResult, get_defense, register_defense
from .evaluation import AttackEvaluator, evaluate
from .experiment import Experiment, setup
from .models import build_model
from .pipeline import RunData, run_data
from .profiles import PROFILES, Profile, get_profile
from .spec import Holdout, RunSpec
from .train import TrainConfig, predict, resolve_device, train_model

__version__ = "0.1.0"

__all__ = ["ATTACKS", "Attack", "AttackEvaluator", "DATASETS", "DEFENSES", "DatasetUnavailable", "Defense",
           "DefenseResult", "Experiment", "Holdout", "ImageSet", "PROFILES", "PoisonedSet", "Profile", "RunData",
           "RunSpec", "TrainConfig", "build_model", "class_balanced_subset", "evaluate", "get_attack", "get_defense",
           "get_profile", "load_dataset", "predict", "register", "register_defense", "resolve_device", "run_data",
           "setup", "train_model"]
